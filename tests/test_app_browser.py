"""``pcam app`` in a real browser: served on 127.0.0.1 by the command, driven by headless Chromium.

The test starts ``pcam app --model MODEL --port PORT --address 127.0.0.1`` (which runs
``streamlit run``), waits for ``/_stcore/health``, opens the page in Debian's Chromium through
Playwright, uploads two patch PNGs through the page's file input, waits for the results and takes
a screenshot. It then checks what was rendered: both file names; for each, the label and the
probability the model gives on that patch (``model.predict`` here, formatted as the app formats
it); both Grad-CAM overlays loaded as 96x96 images; and the screenshot is a PNG of the viewport's
size whose overlay regions are coloured, not blank, and differ from the patches beside them.
The research-use notice is visible from the start; turning off the *Grad-CAM maps* switch in
the sidebar then removes both overlays and leaves the patches and their results.

It skips where Chromium (``chromium`` on the PATH) or the playwright package is missing; ``.ci/run``
installs Chromium. ``PCAM_APP_SCREENSHOT=PATH`` also saves the screenshot there (that is how
``docs/app.png`` is made, with ``PCAM_APP_TEST_MODEL`` pointing at the demo model).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("streamlit")
from PIL import Image

from pcam.serve.app import logic
from pcam.testing import generate

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 1280, 1400  # the browser's viewport, and the screenshot's size
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium reaches for the network at start, and this closed network refuses
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_TIMEOUT = 60.0  # seconds for the server to answer its health check
RENDER_TIMEOUT = 180.0  # seconds for the page: the first run imports TensorFlow, loads the model


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright==1.65.2)")
    return path


@pytest.fixture(scope="module")
def patch_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, np.ndarray]]:
    """Two synthetic patches as PNG files, one tumour and one normal by the PCam rule."""
    batch = generate(8, seed=3)
    folder = tmp_path_factory.mktemp("browser-patches")
    files = []
    for kind, label in (("tumour", 1), ("normal", 0)):
        index = int(np.flatnonzero(batch.labels == label)[0])
        path = folder / f"sample-{kind}.png"
        Image.fromarray(batch.images[index]).save(path)
        files.append((path, batch.images[index]))
    return files


@pytest.fixture(scope="module")
def model_path(
    tmp_path_factory: pytest.TempPathFactory, patch_files: list[tuple[Path, np.ndarray]]
) -> Path:
    """``$PCAM_APP_TEST_MODEL``, or the small CNN with its head scaled to tell the two apart.

    Untrained, the small CNN gives both patches about the same probability; its logit is
    scaled and centred on them so that they get about 0.12 and 0.88 (no training needed).
    """
    given = os.environ.get("PCAM_APP_TEST_MODEL")
    if given:
        return Path(given).resolve()
    import keras

    from pcam.model.architectures import build_model

    model = build_model("small", weights=None, seed=0)
    images = np.stack([image for _, image in patch_files])
    pooled = keras.Model(model.inputs[0], model.get_layer("pcam_pool").output)
    head = model.get_layer("pcam_tumour")
    kernel, bias = head.get_weights()
    logits = (np.asarray(pooled.predict(images, verbose=0)) @ kernel + bias).reshape(-1)
    spread = float(abs(logits[0] - logits[1]))
    if spread > 1e-6:
        scale = 4.0 / spread * (1.0 if logits[0] > logits[1] else -1.0)
        head.set_weights([kernel * scale, (bias - float(logits.mean())) * scale])
    path = tmp_path_factory.mktemp("browser-model") / "model.keras"
    model.save(path)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(model_path: Path, tmp_path: Path) -> Iterator[str]:
    """``pcam app`` serving ``model_path`` on 127.0.0.1; yields its URL; always stopped."""
    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "pcam", "app", "--model", str(model_path)]
    command += ["--port", str(port), "--address", "127.0.0.1"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"pcam app exited with {process.returncode}: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"pcam app did not answer within {SERVER_TIMEOUT:.0f} s: {log.read_text()}"
                )
            time.sleep(0.25)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # pcam app passes it on to streamlit
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: pcam app, streamlit
                process.wait(timeout=10)
        if process.returncode not in (0, -signal.SIGTERM):
            print(log.read_text(), file=sys.stderr)


def test_the_app_in_headless_chromium(
    chromium: str,
    server: str,
    model_path: Path,
    patch_files: list[tuple[Path, np.ndarray]],
    tmp_path: Path,
) -> None:
    import keras
    from playwright.sync_api import sync_playwright

    reference = keras.models.load_model(model_path)
    images = np.stack([image for _, image in patch_files])
    probabilities = np.asarray(reference.predict(images, verbose=0), dtype=np.float64).reshape(-1)
    names = [path.name for path, _ in patch_files]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(
                viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1
            )
            page.goto(server, timeout=RENDER_TIMEOUT * 1000)
            notice = page.get_by_text("Research use only, not for diagnosis.")
            notice.wait_for(state="visible", timeout=RENDER_TIMEOUT * 1000)
            switch = page.get_by_role("switch", name="Grad-CAM maps")  # the sidebar toggle
            assert switch.is_checked()  # on by default
            upload = page.locator('input[type="file"]')
            upload.wait_for(state="attached", timeout=RENDER_TIMEOUT * 1000)
            upload.set_input_files([str(path) for path, _ in patch_files])
            page.get_by_text("Batch: 2 patches").wait_for(timeout=RENDER_TIMEOUT * 1000)
            overlays = [page.locator(f'img[alt="Grad-CAM overlay {name}"]') for name in names]
            patches = [page.locator(f'img[alt="patch {name}"]') for name in names]
            for image in overlays + patches:
                image.wait_for(timeout=RENDER_TIMEOUT * 1000)
            page.wait_for_function(
                "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
                timeout=RENDER_TIMEOUT * 1000,
            )
            page.wait_for_timeout(500)  # let the last layout settle before the picture
            shot_path = tmp_path / "app.png"
            shot = page.screenshot(path=str(shot_path))
            saved = os.environ.get("PCAM_APP_SCREENSHOT")
            if saved:
                Path(saved).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot_path, saved)
            text = page.inner_text("body")
            sizes = [image.evaluate("i => [i.naturalWidth, i.naturalHeight]") for image in overlays]
            boxes = [_box(image) for image in overlays]
            patch_boxes = [_box(image) for image in patches]

            # the switch off: no overlay any more, the patches and their results stay
            # the input is visually hidden under its label: click the label, as a user does
            page.locator("label", has=switch).get_by_text("Grad-CAM maps", exact=True).click()
            page.get_by_text("Grad-CAM maps are off").wait_for(timeout=RENDER_TIMEOUT * 1000)
            page.wait_for_function(
                "() => !document.querySelector('img[alt^=\"Grad-CAM overlay\"]')",
                timeout=RENDER_TIMEOUT * 1000,
            )
            assert not switch.is_checked()
            for image in patches:  # the rerun redraws the rows one by one
                image.wait_for(timeout=RENDER_TIMEOUT * 1000)
            page.wait_for_function(
                "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
                timeout=RENDER_TIMEOUT * 1000,
            )
            overlays_off = page.locator('img[alt^="Grad-CAM overlay"]').count()
            patches_off = [image.count() for image in patches]
            text_off = page.inner_text("body")
        finally:
            browser.close()

    # the rendered text: both files, each with the model's label and probability
    for name, probability in zip(names, probabilities, strict=True):
        assert name in text
        found = re.search(
            rf"{re.escape(name)}\s+(tumour|normal), probability of tumour (\d\.\d{{3}})", text
        )
        assert found is not None, f"no result line for {name} in the page: {text!r}"
        label, shown = found.groups()
        assert abs(float(shown) - probability) <= 0.0006  # three decimals, as the app shows it
        if abs(probability - logic.DEFAULT_THRESHOLD) > 1e-4:
            assert label == logic.label_of(probability)
    assert "batch average" in text
    assert "Research use only, not for diagnosis." in text

    # the switch off
    assert overlays_off == 0
    assert patches_off == [1, 1]
    for name, probability in zip(names, probabilities, strict=True):
        found = re.search(
            rf"{re.escape(name)}\s+\w+, probability of tumour (\d\.\d{{3}})", text_off
        )
        assert found is not None, f"no result line for {name} with the maps off: {text_off!r}"
        assert abs(float(found.group(1)) - probability) <= 0.0006

    # the overlays: real 96x96 images, drawn in colour over the patches
    assert sizes == [[96, 96], [96, 96]]
    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    picture = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.int16)
    assert picture.shape == (HEIGHT, WIDTH, 3)
    assert picture.std() > 10  # not a blank page
    for box, patch_box in zip(boxes, patch_boxes, strict=True):
        overlay = _crop(picture, box)
        patch = _crop(picture, patch_box)
        assert min(overlay.shape[:2]) >= 96  # shown at least at its own size
        assert overlay.std() > 15  # the map's colours, not a flat area
        chroma = overlay.max(axis=2) - overlay.min(axis=2)
        assert np.percentile(chroma, 90) > 60  # saturated jet colours somewhere
        assert np.abs(overlay.mean(axis=(0, 1)) - patch.mean(axis=(0, 1))).max() > 10


def _box(locator: Any) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of an element wholly in the viewport, 2 px inside it."""
    found = locator.bounding_box()
    assert found is not None
    left, top = int(np.ceil(found["x"])) + 2, int(np.ceil(found["y"])) + 2
    right = int(found["x"] + found["width"]) - 2
    bottom = int(found["y"] + found["height"]) - 2
    assert 0 <= left < right <= WIDTH, f"element outside the screenshot: {found}"
    assert 0 <= top < bottom <= HEIGHT, f"element outside the screenshot: {found}"
    return left, top, right, bottom


def _crop(picture: npt.NDArray[np.int16], box: tuple[int, int, int, int]) -> npt.NDArray[np.int16]:
    left, top, right, bottom = box
    return picture[top:bottom, left:right]
