"""The package layout: old module paths are aliases of the same modules, and nothing moved twice."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

import pcam
import pcam.explain
import pcam.model
from pcam import moved
from pcam.moved import MOVED, MovedModuleFinder, lazy_attributes, new_name

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _module_file(name: str) -> Path | None:
    """The source of the module ``name`` under the repository, or None if there is none."""
    relative = Path(*name.split("."))
    for candidate in (relative.with_suffix(".py"), relative / "__init__.py"):
        if (ROOT / candidate).is_file():
            return ROOT / candidate
    return None


def _import_old(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[str]]:
    """Import ``name`` afresh as an old path; return the module and the warnings' messages."""
    monkeypatch.delitem(sys.modules, name, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(name)
    return module, [str(w.message) for w in caught if w.category is DeprecationWarning]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_is_the_new_module_itself_with_a_deprecation_warning(
    old: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = importlib.import_module(MOVED[old])
    spec = new.__spec__
    module, messages = _import_old(old, monkeypatch)
    assert module is new
    assert messages == [
        f"{old} has moved to {MOVED[old]}; import it from there "
        "(the old path is an alias that will be removed in a later release)"
    ]
    assert new.__spec__ is spec  # the alias leaves the module's own spec and name alone
    assert new.__name__ == MOVED[old]
    assert getattr(pcam, old.removeprefix("pcam.")) is new  # ``pcam.gradcam`` as an attribute


def test_the_warning_points_at_the_line_that_imports_the_old_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "pcam.gradcam", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        __import__("pcam.gradcam")  # a statement of this file, out of the type checker's sight
    [warning] = [w for w in caught if w.category is DeprecationWarning]
    assert warning.filename == __file__


def test_a_submodule_of_a_moved_package_follows_it_and_is_never_loaded_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pcam.serve.app.logic as logic

    for name in ("pcam.app", "pcam.app.logic"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    old, messages = _import_old("pcam.app.logic", monkeypatch)
    assert old is logic
    assert any("pcam.app.logic has moved to pcam.serve.app.logic" in m for m in messages)
    copies = {
        id(m) for m in list(sys.modules.values()) if getattr(m, "__file__", "") == logic.__file__
    }
    assert copies == {id(logic)}
    assert sys.modules["pcam.app.logic"] is logic
    namespace: dict[str, object] = {}
    exec("from pcam.app.logic import predict", namespace)  # the statement users wrote
    assert namespace["predict"] is logic.predict


def test_patching_the_old_path_patches_the_module_the_package_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pcam.model.train

    old, _ = _import_old("pcam.train", monkeypatch)
    monkeypatch.setattr(old, "DEFAULT_SENTINEL_FOR_TEST", 3, raising=False)
    assert pcam.model.train.DEFAULT_SENTINEL_FOR_TEST == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("pcam.gradcam", "pcam.explain.gradcam"),
        ("pcam.app", "pcam.serve.app"),
        ("pcam.app.logic", "pcam.serve.app.logic"),
        ("pcam.app.a.b", "pcam.serve.app.a.b"),
        ("pcam.explain_plots", "pcam.explain.plots"),
        ("pcam.quiet", "pcam.cli.quiet"),
    ],
)
def test_new_name_maps_a_moved_module_and_its_submodules(old: str, new: str) -> None:
    assert new_name(old) == new


@pytest.mark.parametrize(
    "name",
    [
        "pcam",
        "pcam.apps",  # a longer name that starts like a moved one is not that module
        "pcam.trainer",
        "pcam.gradcam_extra",
        "pcam.model",  # a package now, not an alias
        "pcam.explain",
        "pcam.model.train",
        "pcam.data.download",
        "pcam.serve.app",
        "apps.pcam.app",
        "gradcam",
    ],
)
def test_new_name_leaves_everything_else_alone(name: str) -> None:
    assert new_name(name) is None


def test_every_new_path_exists_and_no_old_path_is_still_a_file() -> None:
    for old, new in MOVED.items():
        assert _module_file(new) is not None, new
        assert _module_file(old) is None, f"{old} is a file again: it would shadow nothing"
        assert new_name(new) is None, f"{new} would itself be aliased"


def test_the_finder_is_installed_once_and_first() -> None:
    moved.install()
    moved.install()
    finders = [f for f in sys.meta_path if isinstance(f, MovedModuleFinder)]
    assert len(finders) == 1
    assert isinstance(sys.meta_path[0], MovedModuleFinder)


@pytest.mark.parametrize(
    ("package", "module"),
    [(pcam.model, "pcam.model.architectures"), (pcam.explain, "pcam.explain.explanation")],
)
def test_a_module_that_became_a_package_still_gives_its_names(package: object, module: str) -> None:
    source = importlib.import_module(module)
    names: list[str] = package.__all__  # type: ignore[attr-defined]
    assert names
    for name in names:
        assert getattr(package, name) is getattr(source, name), name
    public = {
        n
        for n, v in vars(source).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == module and callable(v)
    }
    assert public <= set(names), f"{sorted(public - set(names))} not re-exported"
    with pytest.raises(AttributeError, match=re.escape("has no attribute 'nothing_here'")):
        package.nothing_here  # type: ignore[attr-defined]  # noqa: B018


def test_the_old_names_of_the_classic_imports_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The imports of the README of earlier releases, in the words users wrote them."""
    from pcam.config import TrainConfig
    from pcam.data import make_dataset, open_split
    from pcam.evaluation.evaluate import evaluate
    from pcam.explain.gradcam import GradCAM
    from pcam.model import build_model, load_model, set_backbone_trainable
    from pcam.model.train import train

    old_gradcam, _ = _import_old("pcam.gradcam", monkeypatch)
    old_train, _ = _import_old("pcam.train", monkeypatch)
    old_evaluate, _ = _import_old("pcam.evaluate", monkeypatch)
    assert old_gradcam.GradCAM is GradCAM  # type: ignore[attr-defined]
    assert old_train.train is train  # type: ignore[attr-defined]
    assert old_train.TrainConfig is TrainConfig  # type: ignore[attr-defined]
    assert old_evaluate.evaluate is evaluate  # type: ignore[attr-defined]
    assert all(callable(f) for f in (make_dataset, open_split, build_model, load_model))
    assert callable(set_backbone_trainable)


def test_the_packages_import_without_tensorflow() -> None:
    code = (
        "import sys, pcam, pcam.model, pcam.explain, pcam.evaluation, pcam.serve, pcam.serve.app, "
        "pcam.data, pcam.cli; import pcam.app; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_a_model_saved_before_the_move_still_loads(tmp_path: Path) -> None:
    """Saved models name the module of ``CaffePreprocess``: ``pcam.model`` before the move."""
    import keras

    from pcam.model import build_model, load_model

    model = build_model("resnet50", weights=None)
    new_file = tmp_path / "new.keras"
    model.save(new_file)
    old_file = tmp_path / "old.keras"
    with zipfile.ZipFile(new_file) as source, zipfile.ZipFile(old_file, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                text = data.decode()
                assert '"module": "pcam.model.architectures"' in text
                data = text.replace('"pcam.model.architectures"', '"pcam.model"').encode()
                assert json.loads(data)
            target.writestr(item, data)
    loaded = load_model(old_file)
    batch = keras.ops.convert_to_numpy(keras.random.randint((2, 96, 96, 3), 0, 256, seed=1))
    expected = model.predict(batch.astype("uint8"), verbose=0)
    assert (loaded.predict(batch.astype("uint8"), verbose=0) == expected).all()


def test_the_readme_lists_every_moved_path() -> None:
    text = README.read_text()
    section = text[text.index("### Moved modules") :]
    rows = dict(re.findall(r"^\| `(pcam[\w.]*)` \| `(pcam[\w.]*)` \|$", section, flags=re.M))
    assert rows == MOVED


def test_lazy_attributes_serves_its_names_from_the_module_and_refuses_the_rest() -> None:
    from pcam import layout

    get = lazy_attributes("some.package", "pcam.layout", ["SPLITS", "IMAGE_SHAPE"])
    assert get("SPLITS") is layout.SPLITS
    assert get("IMAGE_SHAPE") is layout.IMAGE_SHAPE
    for name in ("h5_path", "nothing"):  # in the module but not served; in neither
        with pytest.raises(AttributeError) as error:
            get(name)
        assert str(error.value) == f"module 'some.package' has no attribute '{name}'"
