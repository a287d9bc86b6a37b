"""``pcam app``: the logic module, the Streamlit page through Streamlit's AppTest, the CLI entry.

AppTest runs the real script (``pcam/serve/app/streamlit_app.py``) in this process and drives its
real widgets: the file uploader (``FileUploader.set_value`` registers the bytes as uploads),
sliders, select boxes, the radio that fits a wrong-size upload and the toggle. Images and the CSV
the download button serves go to Streamlit's in-memory media store, which AppTest does not expose;
a spy on that store (``media``) records what the page handed it, so the tests read the very
PNGs and CSV a browser would get.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("streamlit")
import keras
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from pcam.cli import main
from pcam.data.patch_io import fit_patch
from pcam.errors import MissingFileError, UnreadableFileError
from pcam.explain.gradcam import GradCAM
from pcam.serve.app import SCRIPT, logic, page
from pcam.testing import generate

TIMEOUT = 120.0  # seconds for one script run; the first one imports TensorFlow and loads the model


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patches() -> npt.NDArray[np.uint8]:
    """Six synthetic H&E-like patches."""
    return generate(6, seed=5).images


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory, patches: npt.NDArray[np.uint8]) -> Path:
    """The small CNN (random features) with its head scaled so probabilities spread over (0, 1).

    Untrained, every patch would get about the same probability; scaling the head's logit to a
    spread of 4 around the patches' median gives both labels and distinct values, with no
    training time. It has the small CNN's layers (``block3_pool`` and the rest).
    """
    from pcam.model.architectures import build_model

    model = build_model("small", weights=None, seed=0)
    pooled = keras.Model(model.inputs[0], model.get_layer("pcam_pool").output)
    head = model.get_layer("pcam_tumour")
    kernel, bias = head.get_weights()
    logits = np.asarray(pooled.predict(patches, verbose=0)) @ kernel + bias
    scale = 4.0 / max(float(np.std(logits)), 1e-6)
    head.set_weights([kernel * scale, (bias - np.median(logits)) * scale])
    path = tmp_path_factory.mktemp("app-model") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def reference(model_path: Path) -> Any:
    """The same model loaded separately: the numbers the app must show come from it."""
    return keras.models.load_model(model_path)


def _probabilities(model: Any, images: npt.ArrayLike) -> npt.NDArray[np.float32]:
    return np.asarray(model.predict(np.asarray(images), verbose=0), dtype=np.float32).reshape(-1)


@pytest.fixture
def media(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every file the page stores for the browser (images, the CSV), by file id."""
    stored: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(
        self: MemoryMediaFileStorage,
        path_or_data: str | bytes,
        mimetype: str,
        kind: Any,
        filename: str | None = None,
    ) -> str:
        file_id = original(self, path_or_data, mimetype, kind, filename)
        stored[file_id] = self.get_file(file_id).content
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return stored


def _served(media: dict[str, bytes], url: str) -> bytes:
    return media[Path(url).stem]


def _pixels(data: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _png(image: npt.ArrayLike, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _start(monkeypatch: pytest.MonkeyPatch, *argv: str) -> AppTest:
    """Run the app's script as ``streamlit run SCRIPT -- *argv`` would."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    app = AppTest.from_file(str(SCRIPT), default_timeout=TIMEOUT).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _upload(app: AppTest, files: Sequence[tuple[str, bytes]]) -> AppTest:
    app.file_uploader(key="uploads").set_value([(n, d, "image/png") for n, d in files]).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _table(app: AppTest) -> dict[str, list[Any]]:
    frame = app.dataframe[0].value
    return {column: list(frame[column]) for column in frame.columns}


def _overlays(app: AppTest) -> list[tuple[str, str]]:
    """``(url, caption)`` of each Grad-CAM overlay, in patch order."""
    found = []
    for element in app.image:
        for url, caption in zip(element.value, element.captions, strict=True):
            if caption.startswith("Grad-CAM"):
                found.append((url, caption))
    return found


def _texts(elements: Any) -> list[str]:
    return [str(element.value) for element in elements]


def _patch_rows(app: AppTest) -> list[tuple[str, str, Any]]:
    """``(patch image url, text, confidence bar)`` of each patch row, in page order.

    Every row has one column with the patch (caption ``patch``) and one with its text and bar,
    so the k-th of each belong to the k-th row.
    """
    images, texts = [], []
    for column in app.columns:
        for element in column.image:
            for url, caption in zip(element.value, element.captions, strict=True):
                if caption == "patch":
                    images.append(url)
        if column.progress:
            [text] = _texts(column.markdown)
            [bar] = column.progress
            texts.append((text, bar))
    assert len(images) == len(texts)
    return [(url, text, bar) for url, (text, bar) in zip(images, texts, strict=True)]


def _notice(app: AppTest) -> str:
    """The research-use notice, which the page shows exactly once."""
    notices = [text for text in _texts(app.info) if "Research use only" in text]
    assert len(notices) == 1, _texts(app.info)
    return notices[0]


def _one_line(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message


# -- the logic module, without Streamlit -------------------------------------------------------


def test_find_model_prefers_the_argument_then_the_demo_model(tmp_path: Path) -> None:
    assert logic.find_model("some/model.keras", cwd=tmp_path) == logic.ModelSource(
        Path("some/model.keras"), demo=False
    )
    with pytest.raises(MissingFileError) as missing:
        logic.find_model(None, cwd=tmp_path)
    message = str(missing.value)
    assert _one_line(message)
    assert "pcam demo" in message
    assert "--model" in message
    demo = tmp_path / logic.DEMO_MODEL
    demo.parent.mkdir(parents=True)
    demo.write_bytes(b"")
    assert logic.find_model(None, cwd=tmp_path) == logic.ModelSource(demo, demo=True)


def test_csv_equals_the_predictions(
    model_path: Path, reference: Any, patches: npt.NDArray[np.uint8]
) -> None:
    classifier = logic.load_classifier(model_path)
    found = logic.predict(classifier, patches)
    expected = _probabilities(reference, patches)
    np.testing.assert_allclose(found.probabilities, expected, atol=1e-6)
    assert found.calls == 1
    assert found.ms_per_patch == pytest.approx(1000.0 * found.seconds / len(patches))
    names = [f"p{i}.png" for i in range(len(patches))]
    notes = [None, "resized from 120x100", None, None, None, None]
    rows = logic.make_rows(names, found, notes, threshold=0.5)
    parsed = list(csv.DictReader(io.StringIO(logic.rows_to_csv(rows))))
    assert list(parsed[0]) == list(logic.CSV_COLUMNS)
    assert [row["file"] for row in parsed] == names
    np.testing.assert_allclose([float(row["probability"]) for row in parsed], expected, atol=1e-6)
    assert [row["label"] for row in parsed] == [
        "tumour" if p >= 0.5 else "normal" for p in expected
    ]
    assert {"tumour", "normal"} == {row["label"] for row in parsed}  # the head spreads them
    assert {float(row["inference_ms"]) for row in parsed} == {round(found.ms_per_patch, 3)}
    assert [row["note"] for row in parsed] == ["", "resized from 120x100", "", "", "", ""]


def test_overlays_have_the_patch_shape_and_follow_the_opacity(
    model_path: Path, reference: Any, patches: npt.NDArray[np.uint8]
) -> None:
    classifier = logic.load_classifier(model_path)
    assert classifier.default_layer == "block3_pool"  # the small CNN's useful layer (README)
    assert "pcam_patch" not in dict(classifier.layers)  # uint8 input: no gradient there
    explainer = logic.make_explainer(classifier, "block3_pool")
    maps = logic.gradcam_maps(explainer, classifier, patches[:3])
    expected, _ = GradCAM(reference, "block3_pool").explain(patches[:3], 1, size=(96, 96))
    np.testing.assert_allclose(maps.tumour, expected, atol=1e-4)
    for found in (maps.tumour, maps.normal):
        assert found.shape == (3, 96, 96)
        assert found.dtype == np.float32
        assert float(found.min()) >= 0.0
        assert float(found.max()) <= 1.0
    probabilities = _probabilities(reference, patches[:3])
    chosen = logic.select_maps(maps, probabilities, 0.5, "predicted")
    for index, p in enumerate(probabilities):
        np.testing.assert_array_equal(
            chosen[index], (maps.tumour if p >= 0.5 else maps.normal)[index]
        )
    none = logic.overlays(patches[:3], chosen, 0.0)
    half = logic.overlays(patches[:3], chosen, 0.5)
    assert all(image.shape == (96, 96, 3) and image.dtype == np.uint8 for image in half)
    np.testing.assert_array_equal(np.stack(none), patches[:3])
    assert all(
        np.abs(h.astype(int) - p.astype(int)).mean() > 5
        for h, p in zip(half, patches[:3], strict=True)
    )


def test_cached_resources_are_built_once_per_model_version_and_layer(
    model_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "model.keras"
    shutil.copyfile(model_path, path)
    source = logic.ModelSource(path, demo=False)
    first = page.classifier(str(path), source.stamp)
    assert page.classifier(str(path), source.stamp) is first
    cam = page.explainer(str(path), source.stamp, "block3_pool")
    assert page.explainer(str(path), source.stamp, "block3_pool") is cam
    assert page.explainer(str(path), source.stamp, "block2_pool") is not cam
    shutil.copyfile(model_path, path)  # a new version of the file (new mtime): loaded again
    assert source.stamp[:2] != (0, 0)
    assert page.classifier(str(path), (source.stamp[0] + 1, *source.stamp[1:])) is not first
    uncalibrated = page.classifier(str(path), (*source.stamp[:2], 0, 0, 0))  # --no-calibration
    assert "calibration turned off" in uncalibrated.probabilities


def test_decode_upload_fits_only_on_request(patches: npt.NDArray[np.uint8]) -> None:
    ok = logic.decode_upload("ok.png", _png(patches[0]))
    assert ok.patch is not None
    assert ok.note is None
    assert ok.error is None
    np.testing.assert_array_equal(ok.patch, patches[0])
    large = np.zeros((100, 120, 3), dtype=np.uint8)
    large[2:98, 12:108] = patches[1]
    waiting = logic.decode_upload("large.png", _png(large))
    assert waiting.needs_fit
    assert waiting.size == (120, 100)
    assert waiting.patch is None
    assert logic.fit_choices(120, 100) == ("crop", "resize")
    cropped = logic.decode_upload("large.png", _png(large), "crop")
    assert cropped.note == "centre-cropped from 120x100"
    assert cropped.patch is not None
    np.testing.assert_array_equal(cropped.patch, patches[1])
    assert logic.decode_upload("large.png", _png(large), "resize").note == "resized from 120x100"
    assert logic.fit_choices(64, 200) == ("resize",)
    small = logic.decode_upload("small.png", _png(np.zeros((64, 64, 3), np.uint8)), "crop")
    assert small.error is not None
    assert _one_line(small.error)
    assert "resize" in small.error
    broken = logic.decode_upload("broken.png", b"not an image at all")
    assert broken.error is not None
    assert _one_line(broken.error)
    assert broken.error.startswith("broken.png:")


def test_load_classifier_refuses_bad_files_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.keras"
    junk.write_text("this is not a Keras file")
    with pytest.raises(UnreadableFileError) as error:
        logic.load_classifier(junk)
    assert _one_line(str(error.value))
    assert str(junk) in str(error.value)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    scaled = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(scaled))
    other = tmp_path / "other.keras"
    keras.Model(inputs, outputs).save(other)
    with pytest.raises(UnreadableFileError) as error:
        logic.load_classifier(other)
    assert _one_line(str(error.value))
    assert "[B, 32, 32, 3]" in str(error.value)


# -- the page, through AppTest -----------------------------------------------------------------


@pytest.mark.slow
def test_uploads_give_rows_labels_and_the_csv(
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    reference: Any,
    patches: npt.NDArray[np.uint8],
    media: dict[str, bytes],
) -> None:
    app = _start(monkeypatch, "--model", str(model_path))
    assert not app.error
    assert not app.warning
    assert any("Upload patches" in text for text in _texts(app.info))
    names = [f"patch-{i}.png" for i in range(4)]
    _upload(app, [(name, _png(image)) for name, image in zip(names, patches[:4], strict=True)])
    assert not app.error
    expected = _probabilities(reference, patches[:4])
    table = _table(app)
    assert table["file"] == names
    np.testing.assert_allclose(table["probability"], expected, atol=1e-5)
    assert table["label"] == ["tumour" if p >= 0.5 else "normal" for p in expected]
    assert set(table["label"]) == {"tumour", "normal"}
    assert len(set(table["inference_ms"])) == 1  # a batch average, the same for every patch
    assert table["inference_ms"][0] > 0
    assert table["note"] == [""] * 4
    assert any("batch average" in text for text in _texts(app.caption))
    details = [text for text in _texts(app.markdown) if text.startswith("**patch-")]
    for name, text, p in zip(names, details, expected, strict=True):
        label = "tumour" if p >= 0.5 else "normal"
        assert f"**{name}**" in text
        assert f"**{label}**, probability of tumour {logic.format_probability(p)}" in text
    served = _served(media, app.download_button[0].proto.url).decode()
    assert served == logic.rows_to_csv(
        [
            logic.Row(name, float(p), label, ms, "")
            for name, p, label, ms in zip(
                names, table["probability"], table["label"], table["inference_ms"], strict=True
            )
        ]
    )

    for threshold in (0.01, 0.99):  # the labels follow the threshold, the table and CSV alike
        app.slider(key="threshold").set_value(threshold).run()
        labels = ["tumour" if p >= threshold else "normal" for p in expected]
        assert _table(app)["label"] == labels
        served = _served(media, app.download_button[0].proto.url).decode()
        assert [line.split(",")[2] for line in served.splitlines()[1:]] == labels
    assert _table(app)["label"] != table["label"]  # 0.99 turned some tumour patches normal


@pytest.mark.slow
def test_opacity_slider_and_layer_choice_change_the_overlay(
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    reference: Any,
    patches: npt.NDArray[np.uint8],
    media: dict[str, bytes],
) -> None:
    app = _upload(_start(monkeypatch, "--model", str(model_path)), [("a.png", _png(patches[0]))])
    layer = app.selectbox(key="layer")
    assert layer.value == "block3_pool"
    assert "block2_pool (12x12)" in layer.options
    p = float(_probabilities(reference, patches[:1])[0])
    class_index = 1 if p >= 0.5 else 0
    cam = GradCAM(reference, "block3_pool")

    def shown() -> tuple[npt.NDArray[np.uint8], str]:
        [(url, caption)] = _overlays(app)
        return _pixels(_served(media, url)), caption

    half, caption = shown()
    assert caption == "Grad-CAM of the predicted label at block3_pool"
    expected_map, _ = cam.explain(patches[:1], class_index, size=(96, 96))
    expected = logic.overlays(patches[:1], expected_map, 0.5)[0]
    assert np.abs(half.astype(int) - expected.astype(int)).max() <= 1

    app.slider(key="opacity").set_value(0.0).run()
    np.testing.assert_array_equal(shown()[0], patches[0])  # opacity 0: the patch itself
    app.slider(key="opacity").set_value(1.0).run()
    full = shown()[0]
    assert np.abs(full.astype(int) - patches[0].astype(int)).mean() > 20
    app.slider(key="opacity").set_value(0.5).run()
    np.testing.assert_array_equal(shown()[0], half)  # back to the same overlay

    app.selectbox(key="layer").set_value("block2_pool").run()
    finer, caption = shown()
    assert caption == "Grad-CAM of the predicted label at block2_pool"
    expected_map, _ = GradCAM(reference, "block2_pool").explain(
        patches[:1], class_index, size=(96, 96)
    )
    assert np.abs(finer.astype(int) - logic.overlays(patches[:1], expected_map, 0.5)[0]).max() <= 1
    assert np.abs(finer.astype(int) - half.astype(int)).mean() > 1

    app.selectbox(key="target").set_value("normal" if class_index == 1 else "tumour").run()
    other, caption = shown()
    assert caption.startswith("Grad-CAM of " + ("normal" if class_index == 1 else "tumour"))
    assert np.abs(other.astype(int) - finer.astype(int)).mean() > 1


def test_the_research_use_notice_is_always_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_path: Path
) -> None:
    def check(app: AppTest) -> None:
        notice = _notice(app)
        assert "Research use only" in notice
        assert "not for diagnosis" in notice
        assert str(app.info[0].value) == notice  # the first message, above everything else

    monkeypatch.chdir(tmp_path)
    check(_start(monkeypatch))  # no model at all
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a Keras file")
    check(_start(monkeypatch, "--model", str(junk)))  # a model that cannot be used
    app = _start(monkeypatch, "--model", str(model_path))
    check(app)  # nothing uploaded yet
    _upload(app, [("a.png", _png(np.zeros((96, 96, 3), np.uint8)))])
    check(app)  # with results


@pytest.mark.slow
def test_the_gradcam_switch_computes_no_map_when_off(
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    reference: Any,
    patches: npt.NDArray[np.uint8],
) -> None:
    calls: dict[str, int] = {"make_explainer": 0, "gradcam_maps": 0}
    real_explainer, real_maps = logic.make_explainer, logic.gradcam_maps

    def make_explainer(*args: Any, **kwargs: Any) -> Any:
        calls["make_explainer"] += 1
        return real_explainer(*args, **kwargs)

    def gradcam_maps(*args: Any, **kwargs: Any) -> logic.Maps:
        calls["gradcam_maps"] += 1
        return real_maps(*args, **kwargs)

    monkeypatch.setattr(logic, "make_explainer", make_explainer)
    monkeypatch.setattr(logic, "gradcam_maps", gradcam_maps)
    page.maps.clear()  # nothing remembered from other tests: a map would be computed here
    page.explainer.clear()
    app = _start(monkeypatch, "--model", str(model_path))
    switch = app.toggle(key="gradcam")
    assert switch.label == "Grad-CAM maps"
    assert switch.value is True  # on by default

    switch.set_value(False).run()
    _upload(app, [("a.png", _png(patches[0])), ("b.png", _png(patches[1]))])
    assert calls == {"make_explainer": 0, "gradcam_maps": 0}  # no map, no explainer
    assert _overlays(app) == []
    table = _table(app)
    assert table["file"] == ["a.png", "b.png"]
    np.testing.assert_allclose(
        table["probability"], _probabilities(reference, patches[:2]), atol=1e-5
    )
    assert [text.split("  \n")[0] for _, text, _ in _patch_rows(app)] == ["**a.png**", "**b.png**"]
    assert app.selectbox(key="layer").disabled  # the map settings wait for the switch
    assert app.slider(key="opacity").disabled
    app.slider(key="threshold").set_value(0.3).run()  # a rerun computes no map either
    assert calls == {"make_explainer": 0, "gradcam_maps": 0}

    app.toggle(key="gradcam").set_value(True).run()
    assert calls == {"make_explainer": 1, "gradcam_maps": 1}  # as before the switch: computed
    assert [caption for _, caption in _overlays(app)] == [
        "Grad-CAM of the predicted label at block3_pool"
    ] * 2
    assert not app.selectbox(key="layer").disabled

    app.toggle(key="gradcam").set_value(False).run()
    assert _overlays(app) == []
    assert calls == {"make_explainer": 1, "gradcam_maps": 1}
    assert not app.exception


def test_each_patch_has_a_confidence_bar_of_its_own_probability(
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    reference: Any,
    patches: npt.NDArray[np.uint8],
) -> None:
    expected = _probabilities(reference, patches[:4])
    low, high = int(np.argmin(expected)), int(np.argmax(expected))
    assert expected[high] - expected[low] > 0.5  # clearly different: a swap would show
    files = [("low.png", _png(patches[low])), ("high.png", _png(patches[high]))]
    app = _upload(_start(monkeypatch, "--model", str(model_path)), files)
    rows = _patch_rows(app)
    assert len(rows) == 2
    for (_, text, bar), name, p in zip(
        rows, ("low.png", "high.png"), expected[[low, high]], strict=True
    ):
        assert text.startswith(f"**{name}**")
        assert bar.value == logic.bar_percent(float(p))
        assert abs(bar.value - 100 * float(p)) <= 0.5  # the bar's length is the probability
        assert bar.text == f"tumour probability {logic.format_probability(float(p))}"
    assert rows[0][2].value < rows[1][2].value
    app.slider(key="threshold").set_value(0.9).run()  # the bar shows the probability, not the label
    assert [bar.value for _, _, bar in _patch_rows(app)] == [r[2].value for r in rows]


def test_bar_percent_rounds_clips_and_empties_nan() -> None:
    assert logic.bar_percent(0.0) == 0
    assert logic.bar_percent(0.004) == 0
    assert logic.bar_percent(0.006) == 1
    assert logic.bar_percent(0.5) == 50
    assert logic.bar_percent(0.996) == 100
    assert logic.bar_percent(1.0) == 100
    assert logic.bar_percent(1.2) == 100
    assert logic.bar_percent(-0.1) == 0
    assert logic.bar_percent(float("nan")) == 0


@pytest.mark.parametrize("failure", ["unreadable", "no patch"])
def test_a_failed_upload_in_the_middle_shifts_no_name(
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    reference: Any,
    media: dict[str, bytes],
    failure: str,
) -> None:
    """``unreadable``: the decoder says why; ``no patch``: it returns neither patch nor error."""
    blank = np.zeros((96, 96, 3), dtype=np.uint8)
    saturated = np.full((96, 96, 3), 255, dtype=np.uint8)
    expected = _probabilities(reference, np.stack([blank, saturated]))
    assert abs(float(expected[0]) - float(expected[1])) > 0.5  # a swap would show
    real = logic.decode_upload

    def decode_upload(name: str, data: bytes, fit: Any = None) -> logic.Upload:
        if name == "middle.png" and failure == "no patch":
            return logic.Upload(name)
        return real(name, data, fit)

    monkeypatch.setattr(logic, "decode_upload", decode_upload)
    files = [
        ("blank.png", _png(blank)),
        ("middle.png", b"not an image"),
        ("saturated.png", _png(saturated)),
    ]
    app = _upload(_start(monkeypatch, "--model", str(model_path)), files)
    [error] = _texts(app.error)
    assert error.startswith("middle.png:")
    assert _one_line(error)
    table = _table(app)
    assert table["file"] == ["blank.png", "saturated.png"]
    np.testing.assert_allclose(table["probability"], expected, atol=1e-5)
    rows = _patch_rows(app)
    assert [text.split("  \n")[0] for _, text, _ in rows] == ["**blank.png**", "**saturated.png**"]
    for (url, text, bar), image, p in zip(rows, (blank, saturated), expected, strict=True):
        np.testing.assert_array_equal(_pixels(_served(media, url)), image)  # its own patch
        assert f"probability of tumour {logic.format_probability(float(p))}" in text
        assert bar.value == logic.bar_percent(float(p))


@pytest.mark.slow
def test_wrong_size_upload_is_fitted_by_the_users_choice(
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    reference: Any,
    patches: npt.NDArray[np.uint8],
) -> None:
    large = np.full((100, 120, 3), 200, dtype=np.uint8)
    large[2:98, 12:108] = patches[1]
    small = patches[2][:64, :64]
    app = _start(monkeypatch, "--model", str(model_path))
    _upload(
        app,
        [("ok.png", _png(patches[0])), ("large.png", _png(large)), ("small.png", _png(small))],
    )
    warnings = _texts(app.warning)
    assert any("**large.png** is 120x100 pixels, not 96x96" in text for text in warnings)
    assert any(
        "**small.png** is 64x64 pixels" in text and "too small to crop" in text for text in warnings
    )
    large_radio, small_radio = app.radio
    assert large_radio.value is None  # nothing is done silently
    assert small_radio.value is None
    assert list(large_radio.options) == ["centre-crop to 96x96", "resize to 96x96"]
    assert list(small_radio.options) == ["resize to 96x96"]
    assert _table(app)["file"] == ["ok.png"]  # the others wait for a choice

    large_radio.set_value("crop").run()
    table = _table(app)
    assert table["file"] == ["ok.png", "large.png"]
    assert table["note"] == ["", "centre-cropped from 120x100"]
    np.testing.assert_allclose(
        table["probability"], _probabilities(reference, patches[:2]), atol=1e-5
    )

    app.radio[0].set_value("resize").run()
    app.radio[1].set_value("resize").run()
    table = _table(app)
    assert table["file"] == ["ok.png", "large.png", "small.png"]
    assert table["note"] == ["", "resized from 120x100", "resized from 64x64"]
    resized = [fit_patch(large, "resize")[0], fit_patch(np.ascontiguousarray(small), "resize")[0]]
    np.testing.assert_allclose(
        table["probability"][1:], _probabilities(reference, np.stack(resized)), atol=1e-5
    )
    assert not app.error


def test_corrupt_and_non_image_uploads_get_one_line_each(
    monkeypatch: pytest.MonkeyPatch, model_path: Path, patches: npt.NDArray[np.uint8]
) -> None:
    good = _png(patches[0])
    app = _start(monkeypatch, "--model", str(model_path))
    _upload(
        app,
        [
            ("notes.png", b"these are notes, not an image"),
            ("cut.png", good[: len(good) // 3]),
            ("grey.png", _png(patches[0][..., 0], mode="L")),
            ("good.png", good),
        ],
    )
    errors = _texts(app.error)
    assert len(errors) == 3
    for name, message in zip(("notes.png", "cut.png", "grey.png"), errors, strict=True):
        assert message.startswith(f"{name}: expected a 96x96 RGB patch")
        assert _one_line(message)
    assert "cannot read" in errors[0]
    assert "mode L" in errors[2]
    assert _table(app)["file"] == ["good.png"]  # the rest of the batch still works


@pytest.mark.parametrize("kind", ["junk", "shape", "missing"])
def test_bad_model_file_gets_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "model.keras"
    if kind == "junk":
        path.write_bytes(b"PK\x03\x04 not really a zip, not a Keras file")
    elif kind == "shape":
        inputs = keras.Input((32, 32, 3), dtype="uint8")
        flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
        keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(flat)).save(path)
    app = _start(monkeypatch, "--model", str(path))
    [message] = _texts(app.error)
    assert message.startswith(f"Cannot use this model: {path}: expected")
    assert _one_line(message)
    expected = {
        "junk": "a file Keras cannot load",
        "shape": "input [B, 32, 32, 3]",
        "missing": "no such file",
    }[kind]
    assert expected in message
    assert not app.file_uploader  # nothing else is offered


def test_without_model_or_demo_model_it_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    app = _start(monkeypatch)
    [message] = _texts(app.error)
    assert message.startswith("No model to use:")
    assert "pcam demo" in message
    assert "--model" in message
    assert any("pcam demo" in text and "pcam app --model" in text for text in _texts(app.markdown))
    assert not app.file_uploader


def test_demo_model_comes_with_a_synthetic_data_note(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    model_path: Path,
    reference: Any,
) -> None:
    demo = tmp_path / logic.DEMO_MODEL
    demo.parent.mkdir(parents=True)
    shutil.copyfile(model_path, demo)
    monkeypatch.chdir(tmp_path)
    app = _start(monkeypatch)
    [note] = _texts(app.warning)
    assert "pcam demo" in note
    assert "synthetic" in note
    assert not app.error
    assert app.file_uploader

    app.toggle(key="samples").set_value(True).run()  # sample patches, no files needed
    assert not app.exception
    table = _table(app)
    samples = generate(4, seed=0)
    assert table["file"] == [
        f"synthetic-{i + 1}-{'tumour' if label else 'normal'}.png"
        for i, label in enumerate(samples.labels)
    ]
    np.testing.assert_allclose(
        table["probability"], _probabilities(reference, samples.images), atol=1e-5
    )


# -- the command ------------------------------------------------------------------------------


def test_pcam_app_runs_streamlit_on_the_script(
    monkeypatch: pytest.MonkeyPatch, model_path: Path
) -> None:
    calls: list[list[str]] = []

    class Child:  # stands for the streamlit process
        def __init__(self, command: list[str]) -> None:
            calls.append(command)

        def wait(self) -> int:
            return 3

        def send_signal(self, signum: int) -> None:
            raise AssertionError("no signal expected")

    monkeypatch.setattr(subprocess, "Popen", Child)
    status = main(["app", "--model", str(model_path), "--port", "8765", "--address", "127.0.0.1"])
    assert status == 3  # streamlit's own exit status
    [command] = calls
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(SCRIPT)]
    options = command[5 : command.index("--")]
    settings = dict(zip(options[::2], options[1::2], strict=True))
    assert settings["--server.address"] == "127.0.0.1"
    assert settings["--server.port"] == "8765"
    assert settings["--server.headless"] == "true"
    assert settings["--browser.gatherUsageStats"] == "false"
    assert command[command.index("--") + 1 :] == ["--model", str(model_path.resolve())]


def test_pcam_app_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["app", "--model", str(tmp_path / "absent.keras")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "absent.keras" in error
    assert "no such file" in error

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "streamlit" else real(name, *a),
    )
    assert main(["app"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "pip install 'pcam[app]'" in error
