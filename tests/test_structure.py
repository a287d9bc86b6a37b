"""The package's shape: no private names across modules, short functions, the CLI as wiring."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from pcam.cli import build_parser, main
from pcam.cli.options import config_from_args, field_docs
from pcam.config import FullCheckConfig, TrainConfig

PACKAGE = Path(__file__).resolve().parent.parent / "pcam"
MAX_FUNCTION_LINES = 80


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_module_imports_a_private_name_of_another() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}: from {node.module} import {alias.name}"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pcam")
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert found == []


def test_no_function_is_longer_than_80_lines() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
        f"({(node.end_lineno or node.lineno) - node.lineno + 1} lines)"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert found == []


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    """The AST walks find what they look for (a private import, a long function)."""
    source = "from pcam.x import _hidden\n\ndef long():\n" + "    pass\n" * 81
    tree = ast.parse(source)
    privates = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_")
    ]
    [function] = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert privates == ["_hidden"]
    assert (function.end_lineno or 0) - function.lineno + 1 == 82


# -- options come from the config dataclasses ------------------------------------------------------


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub: argparse.ArgumentParser = commands.choices[command]
    return sub


def _options_by_dest(command: str) -> dict[str, argparse.Action]:
    return {
        action.dest: action
        for action in _subparser(command)._actions
        if action.option_strings and action.help != argparse.SUPPRESS
    }


@pytest.mark.parametrize(
    ("command", "config"), [("train", TrainConfig), ("fullcheck", FullCheckConfig)]
)
def test_every_setting_is_an_option_with_its_fields_default_and_docstring(
    command: str, config: type
) -> None:
    actions = _options_by_dest(command)
    docs = field_docs(config)
    skipped = {"explain_patches"}  # a full-check setting of the API only
    for field in dataclasses.fields(config):
        if field.name in skipped:
            continue
        action = actions[field.name]
        default = None if field.default is dataclasses.MISSING else field.default
        assert action.default == default, field.name
        assert docs[field.name]
        assert docs[field.name] in (action.help or "").replace("%%", "%")
    assert set(actions) - {f.name for f in dataclasses.fields(config)} == {"help"}


def test_field_docs_are_plain_text() -> None:
    docs = field_docs(TrainConfig)
    assert docs["model"] == "resnet50 or small (a small CNN for fast runs on a CPU)."
    assert "``" not in " ".join(docs.values())
    assert ":func:" not in " ".join(docs.values())


@pytest.mark.parametrize(
    ("command", "config"), [("train", TrainConfig), ("fullcheck", FullCheckConfig)]
)
def test_the_defaults_on_the_command_line_are_the_configs(
    command: str, config: type, tmp_path: Path
) -> None:
    argv = [command, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]
    args = build_parser().parse_args(argv)
    built = config_from_args(config, args)
    assert built == config(data=str(tmp_path / "d"), out=str(tmp_path / "o"))


def test_every_train_option_reaches_the_config(tmp_path: Path) -> None:
    """Each option set to a value other than its default arrives in the TrainConfig."""
    argv = ["train", "--data", "d", "--out", "o", "--arch", "small", "--weights", "imagenet"]
    argv += ["--epochs", "3", "--batch-size", "32", "--lr", "0.002", "--patience", "7"]
    argv += ["--max-train-samples", "100", "--seed", "9", "--freeze-backbone"]
    argv += ["--lr-schedule", "constant", "--strategy", "mirrored", "--mixed-precision"]
    argv += ["--no-xla", "--deterministic", "--overwrite", "--unfreeze-from", "block4_conv"]
    built = config_from_args(TrainConfig, build_parser().parse_args(argv))
    assert built == TrainConfig(
        data="d",
        out="o",
        epochs=3,
        batch_size=32,
        model="small",
        weights="imagenet",
        freeze_backbone=True,
        unfreeze_from="block4_conv",
        lr=0.002,
        lr_schedule="constant",
        max_train_samples=100,
        seed=9,
        strategy="mirrored",
        patience=7,
        overwrite=True,
        mixed_precision=True,
        xla=False,
        deterministic=True,
    )


# -- deprecated spellings --------------------------------------------------------------------------


def _fake(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    seen: list[Any] = []

    def record(config: Any, **_: Any) -> Any:
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(module, name, record)
    return seen


@pytest.mark.parametrize(
    ("old", "new", "warning"),
    [
        (["--model", "small"], ["--arch", "small"], "--model is deprecated"),
    ],
)
def test_train_model_is_a_deprecated_spelling_of_arch(
    old: list[str],
    new: list[str],
    warning: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import pcam.model.train

    seen = _fake(monkeypatch, pcam.model.train, "train")
    for argv in (old, new):
        with pytest.raises(SystemExit):
            main(["train", "--data", "d", "--out", "o", *argv])
    assert seen[0] == seen[1]
    assert seen[0].model == "small"
    err = capsys.readouterr().err
    assert err == (f"pcam train: warning: {warning} and goes in the next release; use --arch\n")


@pytest.mark.parametrize(
    ("command", "positional", "flag"),
    [
        ("check", "DATA_DIR", "--data"),
        ("synth", "OUT_DIR", "--out"),
        ("download", "DEST", "--out"),
        ("fullcheck", "DATA_DIR", "--data"),
    ],
)
def test_old_positionals_still_work_with_one_warning(
    command: str, positional: str, flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    extra = ["--out", str(tmp_path / "o")] if command == "fullcheck" else []
    old = build_parser().parse_args([command, str(folder), *extra])
    from pcam.cli.options import resolve_deprecated_positionals

    def refuse(message: str) -> None:
        raise AssertionError(message)

    resolve_deprecated_positionals(old, refuse)
    assert getattr(old, flag.lstrip("-")) == folder
    assert capsys.readouterr().err == (
        f"pcam {command}: warning: {positional} is deprecated and goes in the next release; "
        f"use {flag} {positional}\n"
    )
    both = [command, str(folder), flag, str(folder), *extra]
    with pytest.raises(SystemExit) as stop:
        main(both)
    assert stop.value.code == 2
    assert f"pass {flag} {positional} or {positional} alone, not both" in capsys.readouterr().err


def test_the_one_line_errors_share_one_form_and_keep_their_builtin_kinds() -> None:
    """One ``WHERE: expected X, found Y; HINT`` base; OSError and ValueError still catch them."""
    from pcam.errors import (
        DamagedDataError,
        DownloadError,
        ExpectedFoundError,
        LayoutError,
        PCamError,
        UnreadableFileError,
    )

    unreadable = UnreadableFileError(Path("a.h5"), "HDF5", "text", "replace it")
    layout = LayoutError(Path("b.h5"), "key 'x'", "'y'", "write it again")
    download = DownloadError("http://127.0.0.1/f.gz", "the file", "HTTP 404", "check the URL")
    assert str(unreadable) == "a.h5: expected HDF5, found text; replace it"
    assert str(layout) == "b.h5: expected key 'x', found 'y'; write it again"
    assert (
        str(download) == "http://127.0.0.1/f.gz: expected the file, found HTTP 404; check the URL"
    )
    assert isinstance(unreadable, OSError)
    assert isinstance(download, OSError)
    assert isinstance(layout, ValueError)
    assert not isinstance(layout, OSError)
    for error in (unreadable, layout, download):
        assert isinstance(error, ExpectedFoundError)
        assert isinstance(error, PCamError)
    assert issubclass(DamagedDataError, UnreadableFileError)


# -- the layout: each folder imports only from the folders before it ------------------------------

LAYERS = (
    (
        "pcam",
        "pcam.layout",
        "pcam.errors",
        "pcam.outputs",
        "pcam.config",
        "pcam.moved",
        "pcam.stopping",
    ),
    ("pcam.data", "pcam.stain.hed", "pcam.stain.augment"),  # the loader's colour stage
    ("pcam.stain",),
    ("pcam.testing",),
    ("pcam.model",),
    ("pcam.evaluation",),
    ("pcam.explain",),
    ("pcam.serve",),
    ("pcam.demo", "pcam.fullcheck"),
    ("pcam.cli", "pcam.__main__"),
)
"""The package's folders in the order the data flows, as the README's layout section lists them."""


def _layer(module: str) -> int:
    """The index in :data:`LAYERS` of the module's folder (its longest matching prefix)."""
    found = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert found, f"{module} belongs to no layer"
    return max(found)[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module == "pcam":
        return [f"pcam.{alias.name}" for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module]
    return []


def _upward_imports(modules: list[tuple[str, ast.Module]]) -> list[str]:
    return [
        f"{name} imports {target}"
        for name, tree in modules
        for node in ast.walk(tree)
        for target in _imported(node)
        if target.split(".")[0] == "pcam" and _layer(target) > _layer(name)
    ]


def test_each_folder_imports_only_from_the_folders_before_it() -> None:
    modules = [(_module_name(path), tree) for path, tree in _modules()]
    assert _upward_imports(modules) == []


def test_the_layer_check_can_fail() -> None:
    tree = ast.parse("from pcam.serve.predict import predict\nimport pcam.cli\n")
    assert _upward_imports([("pcam.explain.gradcam", tree)]) == [
        "pcam.explain.gradcam imports pcam.serve.predict",
        "pcam.explain.gradcam imports pcam.cli",
    ]
    assert _upward_imports([("pcam.cli.runner", tree)]) == []
    assert _layer("pcam.model.train") == 4
    assert _layer("pcam.stain.hed") == _layer("pcam.data.stream")
    assert _layer("pcam.stain.macenko") == _layer("pcam.data.stream") + 1
    assert _layer("pcam.layout") == 0


def test_the_readme_layout_lists_the_layers_in_order() -> None:
    text = (PACKAGE.parent / "README.md").read_text()
    section = text[text.index("## Layout of the repository") : text.index("### Moved modules")]
    folders = [f"pcam.{name}" for name in re.findall(r"^  (\w+)/", section, flags=re.M)]
    expected = [p[0] for p in LAYERS if p[0].count(".") == 1 and p[0] not in ("pcam.demo",)]
    assert folders == [name for name in expected if (PACKAGE / name.split(".")[1]).is_dir()]
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    mentioned = re.findall(r"^  ([a-z ]+?)\s{2,}", section, flags=re.M)
    assert sorted(" ".join(mentioned).split()) == top
