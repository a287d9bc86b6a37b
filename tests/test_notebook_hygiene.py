"""The notebooks as committed: outputs stripped, minimal metadata, parameters from PCAM_NOTEBOOK_*.

Plain JSON and ``ast``, no nbformat: these run in the test environment, not the notebook one.
Every notebook under ``notebooks/`` is checked; the runner ``run_on_real_sample.py`` too.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
README = NOTEBOOKS_DIR / "README.md"
RUNNER = NOTEBOOKS_DIR / "run_on_real_sample.py"
REAL_SAMPLE_NOTEBOOK = NOTEBOOKS_DIR / "Histopathology_CNN_GradCAM.ipynb"

PARAMETER_FUNCTION = "parameter"
"""The one function of a notebook that reads the environment (defined in its first code cell)."""
PARAMETER_NAME = re.compile(r"PCAM_NOTEBOOK_[A-Z0-9_]+")
NOTEBOOK_METADATA_KEYS = {"kernelspec", "language_info"}


def load(path: Path) -> dict[str, Any]:
    notebook: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return notebook


def code_cells(notebook: dict[str, Any]) -> list[str]:
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def python_of(source: str) -> ast.Module:
    """A code cell as Python: IPython magics and shell lines (``%...``, ``!...``) left out."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def reads_environment(node: ast.AST) -> bool:
    """``os.environ`` or ``os.getenv`` (or ``environ``/``getenv`` imported from os)."""
    if isinstance(node, ast.Attribute):
        return node.attr in ("environ", "getenv")
    return isinstance(node, ast.Name) and node.id in ("environ", "getenv")


def parameter_names(tree: ast.Module) -> list[str]:
    """The names passed to ``parameter(...)``; every one must be a string literal."""
    names = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == PARAMETER_FUNCTION
        ):
            first = node.args[0] if node.args else None
            assert isinstance(first, ast.Constant), (
                f"parameter() must be called with a literal variable name, found {ast.dump(node)}"
            )
            assert isinstance(first.value, str)
            names.append(first.value)
    return names


def defaults_for_given_data(tree: ast.Module) -> dict[str, object]:
    """Each parameter's default when a data directory is given (the ``else`` of a conditional)."""
    defaults: dict[str, object] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == PARAMETER_FUNCTION
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
        ):
            default = node.args[1]
            if isinstance(default, ast.IfExp):
                default = default.orelse
            if isinstance(default, ast.Constant):
                defaults[str(node.args[0].value)] = default.value
    return defaults


def notebook_parameters(path: Path) -> list[str]:
    cells = code_cells(load(path))
    return parameter_names(python_of(cells[0])) if cells else []


def import_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_on_real_sample", RUNNER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_notebooks_and_the_readme_lists_each() -> None:
    assert REAL_SAMPLE_NOTEBOOK in NOTEBOOKS
    readme = README.read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert path.name in readme, f"notebooks/README.md does not mention {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_outputs_are_stripped_and_metadata_minimal(path: Path) -> None:
    notebook = load(path)
    assert notebook["nbformat"] == 4
    assert notebook["nbformat_minor"] >= 4
    assert set(notebook["metadata"]) <= NOTEBOOK_METADATA_KEYS, (
        f"{path.name}: notebook metadata beyond {sorted(NOTEBOOK_METADATA_KEYS)}: "
        f"{sorted(set(notebook['metadata']) - NOTEBOOK_METADATA_KEYS)}"
    )
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert notebook["cells"], f"{path.name} has no cells"
    for index, cell in enumerate(notebook["cells"]):
        where = f"{path.name}, cell {index}"
        assert cell["metadata"] == {}, f"{where}: cell metadata {cell['metadata']}"
        assert "attachments" not in cell, f"{where}: attachments"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{where}: outputs are committed (strip them)"
            assert cell["execution_count"] is None, f"{where}: execution_count is set"
        assert "".join(cell["source"]).strip(), f"{where} is empty"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_no_machine_specific_paths(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for fragment in ("/work/", "/home/", "/tmp/", "/root/", "C:\\\\"):
        assert fragment not in text, f"{path.name} hard-codes a path containing {fragment!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_parameters_come_from_pcam_notebook_variables_in_the_first_cell(path: Path) -> None:
    cells = [python_of(source) for source in code_cells(load(path))]
    for index, tree in enumerate(cells):
        helpers = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name == PARAMETER_FUNCTION
        ]
        inside_helper = {id(node) for helper in helpers for node in ast.walk(helper)}
        for node in ast.walk(tree):
            if reads_environment(node):
                assert index == 0, f"{path.name}: code cell {index} reads the environment"
                assert id(node) in inside_helper, (
                    f"{path.name}: the environment is read outside {PARAMETER_FUNCTION}() "
                    f"(line {getattr(node, 'lineno', '?')} of the first code cell)"
                )
        names = parameter_names(tree)
        assert index == 0 or not names, f"{path.name}: code cell {index} reads parameters {names}"
        for name in names:
            assert PARAMETER_NAME.fullmatch(name), f"{path.name}: parameter {name!r}"
    first = cells[0] if cells else None
    names = parameter_names(first) if first is not None else []
    assert len(names) == len(set(names)), f"{path.name}: a parameter is read twice: {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_parameter_is_documented_and_every_documented_one_exists(path: Path) -> None:
    read = set(notebook_parameters(path))
    readme = set(PARAMETER_NAME.findall(README.read_text(encoding="utf-8")))
    markdown = "".join(
        "".join(cell["source"]) for cell in load(path)["cells"] if cell["cell_type"] == "markdown"
    )
    own_table = set(PARAMETER_NAME.findall(markdown))
    assert read <= readme, f"not in notebooks/README.md: {sorted(read - readme)}"
    assert read <= own_table, f"not in {path.name}'s markdown: {sorted(read - own_table)}"
    assert own_table <= read, f"{path.name} documents unread {sorted(own_table - read)}"
    if path == REAL_SAMPLE_NOTEBOOK:
        assert readme <= read, f"notebooks/README.md documents unread {sorted(readme - read)}"


def test_the_runner_sets_only_parameters_the_notebook_reads() -> None:
    read = set(notebook_parameters(REAL_SAMPLE_NOTEBOOK))
    runner = import_runner()
    assert runner.NOTEBOOK == REAL_SAMPLE_NOTEBOOK
    set_by_runner = set(PARAMETER_NAME.findall(RUNNER.read_text(encoding="utf-8")))
    assert set_by_runner <= read, f"the runner names unread {sorted(set_by_runner - read)}"
    readme = README.read_text(encoding="utf-8")
    for name, value in runner.REAL_SAMPLE_SETTINGS.items():
        assert f"`{name}={value}`" in readme, f"notebooks/README.md does not give {name}={value}"
    # the floors for real data are the same whether the runner or a user sets the data directory
    defaults = defaults_for_given_data(python_of(code_cells(load(REAL_SAMPLE_NOTEBOOK))[0]))
    for name, value in runner.REAL_SAMPLE_SETTINGS.items():
        if "_MIN_" in name:
            assert defaults.get(name) == value, (
                f"the runner sets {name}={value}, the notebook defaults to {defaults.get(name)}"
            )


def test_the_runner_environment_gives_way_to_explicit_settings(tmp_path: Path) -> None:
    runner = import_runner()
    sample = tmp_path / "sample"
    env = runner.notebook_environment(
        sample,
        {"PCAM_NOTEBOOK_MIN_AUC": "0.99", "PCAM_NOTEBOOK_OUT": str(tmp_path / "out"), "X": "1"},
    )
    assert env["PCAM_NOTEBOOK_DATA"] == str(sample)
    assert env["PCAM_NOTEBOOK_MIN_AUC"] == "0.99"
    assert env["PCAM_NOTEBOOK_OUT"] == str(tmp_path / "out" / "real-sample")
    assert env["X"] == "1"
    for name, value in runner.REAL_SAMPLE_SETTINGS.items():
        if name != "PCAM_NOTEBOOK_MIN_AUC":
            assert env[name] == value
    command = runner.pytest_command(["-x"])
    assert command[:4] == [sys.executable, "-m", "pytest", "--nbmake"]
    assert any(arg.startswith("--nbmake-timeout=") for arg in command)
    assert command[-2:] == [str(REAL_SAMPLE_NOTEBOOK), "-x"]


def test_the_runner_skips_in_one_line_without_the_sample(tmp_path: Path) -> None:
    env = {**os.environ, "PCAM_SHARED_DATA": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(RUNNER)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 1, lines
    assert "skipped" in lines[0]
    assert str(tmp_path / "pcam-sample") in lines[0]
