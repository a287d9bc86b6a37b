"""``pcam predict`` writes any file name safely into its CSV (issue 12).

A name that is not valid UTF-8 is written with its bad bytes escaped, and its row is kept; a
text cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, carriage
return first) gets a leading ``'``. Numbers, and every other name, are written as before.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
from PIL import Image

from pcam.cli import main
from pcam.serve.predict import csv_text
from pcam.testing import write_split

HEADER = "source,index,probability,label"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny PCam-shaped model, saved without an optimizer."""
    import keras

    from pcam.testing.models import tiny_model

    path = tmp_path_factory.mktemp("names-model") / "model.keras"
    compiled = tiny_model(seed=0)
    keras.Model(compiled.inputs, compiled.outputs).save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path: Path) -> Any:
    """The saved model, loaded once for the expected probabilities."""
    import keras

    return keras.models.load_model(model_path)


def _patches(n: int, seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def _probability(model: Any, patch: npt.NDArray[np.uint8]) -> float:
    return float(np.asarray(model.predict_on_batch(patch[np.newaxis])).reshape(-1)[0])


def _lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").splitlines()  # strict UTF-8


def test_csv_text_rules() -> None:
    assert csv_text("=cmd|calc.png") == "'=cmd|calc.png"
    assert csv_text("+1.png") == "'+1.png"
    assert csv_text("-x.png") == "'-x.png"
    assert csv_text("@a.png") == "'@a.png"
    assert csv_text("\tt.png") == "'\tt.png"
    assert csv_text("\rr.png") == "'\rr.png"
    for unchanged in ("a.png", "folder/=b.png", "a=b.png", " =c.png", "'d.png", "é-ü.png", ""):
        assert csv_text(unchanged) == unchanged
    assert csv_text(os.fsdecode(b"bad\xff.png")) == "bad\\xff.png"
    assert csv_text(os.fsdecode(b"=\xfe\xff")) == "'=\\xfe\\xff"  # escaped, then neutralised
    assert csv_text("odd\ud800.png") == "odd\\ud800.png"  # a surrogate no file name decodes to


def test_a_name_that_is_not_utf8_is_written_escaped_and_its_row_kept(
    model: Any, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = os.path.join(os.fsencode(folder), b"bad\xff.png")
    patches = _patches(2, seed=1)
    try:
        with open(bad, "wb") as stream:
            Image.fromarray(patches[0]).save(stream, format="PNG")
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take file names that are not UTF-8")
    Image.fromarray(patches[1]).save(folder / "good.png")
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--model", str(model_path), str(folder), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("2 patches predicted")
    lines = _lines(out)
    assert lines[0] == HEADER
    rows = list(csv.reader(lines[1:]))
    assert [row[0] for row in rows] == [f"{folder}/bad\\xff.png", f"{folder}/good.png"]
    assert [row[1] for row in rows] == ["", ""]
    for row, patch in zip(rows, patches, strict=True):
        assert float(row[2]) == pytest.approx(_probability(model, patch), rel=1e-5, abs=1e-6)


def test_formula_cells_are_neutralised_and_numbers_are_not(
    model: Any,
    model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = ["=cmd|calc.png", "-x.png", "@a.png", "+1.png", "\ttab.png", "\rcr.png", "plain.png"]
    patches = _patches(len(names), seed=2)
    for name, patch in zip(names, patches, strict=True):
        Image.fromarray(patch).save(tmp_path / name, format="PNG")
    write_split(tmp_path / "data", "test", 3, seed=0)
    shutil.copyfile(
        tmp_path / "data" / "camelyonpatch_level_2_split_test_x.h5", tmp_path / "@split_x.h5"
    )
    monkeypatch.chdir(tmp_path)  # relative inputs: each source starts with the file name
    argv = ["predict", "--model", str(model_path), ".", "@split_x.h5", "--out", "-"]
    assert main(argv) == 0
    written = capsys.readouterr().out
    rows = list(csv.reader(io.StringIO(written, newline="")))
    assert rows[0] == HEADER.split(",")
    by_name = dict(zip(names, patches, strict=True))
    expected_order = sorted(names)  # a folder gives its files by name
    assert [row[0] for row in rows[1:8]] == [
        name if name == "plain.png" else "'" + name for name in expected_order
    ]
    for row, name in zip(rows[1:8], expected_order, strict=True):
        assert row[1] == ""
        assert float(row[2]) == pytest.approx(_probability(model, by_name[name]), abs=1e-6)
        assert row[3] in ("tumour", "normal")
    split = rows[8:]
    assert [row[0] for row in split] == ["'@split_x.h5"] * 3
    assert [row[1] for row in split] == ["0", "1", "2"]  # numbers as they were: no quote
    assert all(not row[2].startswith("'") and float(row[2]) >= 0.0 for row in split)
    assert "\n=cmd|calc.png" not in written  # no cell in the file starts with the formula
    assert '\n"\'\rcr.png","","0.' in written  # a lone CR is quoted: one record
    assert "\n'=cmd|calc.png,,0." in written


def test_the_csv_file_holds_the_same_neutralised_rows(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, patch in zip(("=sum(A1).png", "ok.png"), _patches(2, seed=3), strict=True):
        Image.fromarray(patch).save(folder / name)
    monkeypatch.chdir(folder)
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(model_path), ".", "--out", str(out)]) == 0
    sources = [line.split(",")[0] for line in _lines(out)[1:]]
    assert sources == ["'=sum(A1).png", "ok.png"]
