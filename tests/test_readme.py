"""The README's examples against the package: its imports resolve, its data example runs, and
every ``pcam`` command line it shows parses, with only options that exist."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from pcam.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]


def _pcam_lines(text: str) -> list[str]:
    """The ``pcam ...`` commands of a block, comments, prompts and ``&&`` chains split off."""
    joined = text.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split("  #", 1)[0].strip()
        for part in line.split("&&"):
            words = part.strip().split()
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # an environment assignment before the command
            if words and words[0] == "pcam":
                commands.append(" ".join(words))
    return commands


def test_the_readme_has_python_and_command_examples() -> None:
    assert len(_blocks("python")) >= 3
    assert len(_pcam_lines("\n".join(_blocks("bash")))) >= 10


@pytest.mark.parametrize("index", range(3))
def test_every_import_of_a_python_example_resolves(index: int) -> None:
    tree = ast.parse(_blocks("python")[index])
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imports
    for node in imports:
        module = importlib.import_module(node.module or "")
        for alias in node.names:
            assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


def test_the_data_example_runs_on_synthetic_pcam(synthetic_root: Path) -> None:
    pytest.importorskip("tensorflow")
    [example] = [block for block in _blocks("python") if "open_split" in block]
    namespace: dict[str, object] = {}
    exec(example.replace('"data/pcam"', repr(str(synthetic_root))), namespace)
    assert namespace["patches"].shape == (3, 96, 96, 3)  # type: ignore[attr-defined]
    images, labels = next(iter(namespace["train"]))  # type: ignore[call-overload]
    assert images.shape == (256, 96, 96, 3)
    assert set(np.unique(labels.numpy())) <= {0, 1}


def test_every_command_line_of_the_readme_parses() -> None:
    parser = build_parser()
    lines = _pcam_lines("\n".join(_blocks("bash")))
    for line in lines:
        words = shlex.split(line)[1:]
        try:
            parser.parse_args(words)
        except SystemExit as stop:  # pragma: no cover - the message is the failure
            raise AssertionError(f"README: {line!r} does not parse ({stop.code})") from None


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def test_the_synopsis_names_every_command_and_only_options_that_exist() -> None:
    [synopsis] = [block for block in _blocks("text") if block.startswith("pcam synth")]
    subparsers = _subparsers()
    entries = re.split(r"\n(?=pcam )", synopsis.strip())
    named = {entry.split()[1] for entry in entries if not entry.startswith("pcam --")}
    assert named == set(subparsers)
    for entry in entries:
        command = entry.split()[1]
        if command.startswith("--"):
            continue
        known = {
            option
            for action in subparsers[command]._actions
            if action.help != argparse.SUPPRESS
            for option in action.option_strings
        }
        for option in re.findall(r"--[a-z][a-z-]*", entry):
            if option.startswith("--no-"):
                continue
            assert option in known, f"README synopsis: pcam {command} has no {option}"


def test_the_model_card_excerpt_is_the_example_cards_own_text() -> None:
    """The README's rendered card excerpt is copied from docs/MODEL_CARD.example.md, not typed."""
    text = README.read_text()
    found = re.search(r"<!-- model-card-excerpt -->\n(.*?)<!-- /model-card-excerpt -->", text, re.S)
    assert found is not None
    card = (README.parent / "docs" / "MODEL_CARD.example.md").read_text()
    tables = [table for table in found.group(1).strip().split("\n\n") if table]
    assert len(tables) == 2
    assert all(table in card for table in tables)
    assert "| Accuracy | " in tables[0]
