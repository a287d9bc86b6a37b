"""What the commands share: the parser class, argument types, options declared once, helpers.

Options that mirror a setting of :mod:`pcam.config` come from the dataclass field itself
(:func:`add_config_option`): the default is the field's, the help is the field's docstring, so
each lives in one place. Options several commands share (``--model``, ``--data``, ``--out``,
``--seed``, ``--batch-size``, ``--threshold``, ``--tta``, ``--overwrite``) are declared once here.
Old spellings stay for one release as deprecated aliases that print one warning line
(:func:`add_deprecated_option`, :func:`add_deprecated_positional`). Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pcam import layout
from pcam.model.heads import DEFAULT_THRESHOLD

if TYPE_CHECKING:
    from pcam.data.patch_io import FitMode
    from pcam.stain.macenko import StainNormaliser

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line that points to ``--help``."""

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 and ``pcam COMMAND: error: MESSAGE; see pcam COMMAND --help``."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


# -- argument types --------------------------------------------------------------------------------


def _number(text: str, kind: Callable[[str], Any], fallback: Any) -> Any:
    try:
        return kind(text)
    except ValueError:
        return fallback


def count(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = _number(text, int, 0)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text!r}")
    return int(value)


def seed(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = _number(text, int, -1)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}")
    return int(value)


def fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    value = _number(text, float, -1.0)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), found {text!r}")
    return float(value)


def unit(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = _number(text, float, -1.0)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], found {text!r}")
    return float(value)


def seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    value = _number(text, float, 0.0)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, found {text!r}")
    return float(value)


def port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    value = _number(text, int, 0)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [1, 65535], found {text!r}")
    return int(value)


def weights(text: str) -> str | None:
    """An argparse type: ``none`` (any case) is no weights; anything else is passed on."""
    return None if text.lower() == "none" else text


# -- options from the config dataclasses -----------------------------------------------------------


@cache
def field_docs(config: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, as one line of plain text, by field name.

    Python keeps no attribute docstrings at run time; they are read from the class's source.
    ReStructuredText markup (````x````, ``:func:`x```) is reduced to its text.
    """
    tree = ast.parse(inspect.getsource(config))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in itertools.pairwise(body):
        documented = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and documented:
            text = " ".join(str(following.value.value).split())
            text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
            docs[node.target.id] = text
    return docs


def field_default(config: type, name: str) -> Any:
    """The default of the dataclass field ``name`` (``None`` for a field without one)."""
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    return None if field.default is dataclasses.MISSING else field.default


def add_config_option(
    parser: argparse.ArgumentParser,
    config: type,
    name: str,
    *flags: str,
    show_default: bool = True,
    **kwargs: Any,
) -> None:
    """Add the option of the config field ``name``: its default, its docstring as the help.

    ``flags`` default to ``--field-name``; ``kwargs`` go to ``add_argument`` (``type``,
    ``choices``, ``metavar``...). A ``bool`` field becomes a switch: ``--flag`` when it defaults
    to false, ``--flag/--no-flag`` when it defaults to true or ``None`` (decided at run time).
    """
    default = field_default(config, name)
    help_text = field_docs(config).get(name, "")
    kind = {f.name: f.type for f in dataclasses.fields(config)}[name]
    if kind in ("bool", bool) and default is False:
        kwargs.setdefault("action", "store_true")
    elif kind in ("bool", bool, "bool | None"):
        kwargs.setdefault("action", argparse.BooleanOptionalAction)
    if show_default and kwargs.get("action") != "store_true":
        shown = "none" if default is None else default
        help_text = f"{help_text} (default: {shown})"
    parser.add_argument(
        *(flags or ("--" + name.replace("_", "-"),)),
        dest=name,
        default=default,
        help=help_text.replace("%", "%%"),
        **kwargs,
    )


def config_from_args(config: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of the dataclass ``config`` from the parsed ``args`` (paths as strings).

    Every field with an attribute of the same name in ``args`` is taken from it; ``overrides``
    win; the other fields keep their defaults.
    """
    values = {}
    for field in dataclasses.fields(config):
        if hasattr(args, field.name):
            value = getattr(args, field.name)
            values[field.name] = str(value) if isinstance(value, Path) else value
    values.update(overrides)
    return config(**values)


# -- options several commands share ----------------------------------------------------------------


def add_saved_model(
    parser: argparse.ArgumentParser, *, required: bool = True, help: str = ""
) -> None:
    """``--model``: a saved model (``.keras``)."""
    parser.add_argument(
        "--model",
        type=Path,
        required=required,
        default=None,
        help=help or "a saved model (.keras), e.g. RUN_DIR/model.keras",
    )


def add_no_calibration(parser: argparse.ArgumentParser) -> None:
    """``--no-calibration``: ignore the model's calibration file (uncalibrated probabilities)."""
    parser.add_argument(
        "--no-calibration",
        action="store_true",
        help="use the model's own, uncalibrated probabilities even when a calibration file "
        "(MODEL_STEM.calibration.json, written by pcam calibrate) sits beside the model",
    )


def add_stain_normalise(parser: argparse.ArgumentParser) -> None:
    """``--stain-normalise REF``: Macenko-normalise every patch to a reference's stains first."""
    parser.add_argument(
        "--stain-normalise",
        type=Path,
        default=None,
        metavar="REF",
        help="normalise the stain colours of every patch to a reference before the model sees "
        "it (Macenko): REF is a patch image, a folder of them (pooled into one fit), or a "
        "reference saved as .json; patches with too little tissue to fit pass unchanged "
        "(default: no normalisation)",
    )


def stain_normaliser(args: argparse.Namespace, *, fit: FitMode = "error") -> StainNormaliser | None:
    """The normaliser ``--stain-normalise`` asks for, read and fitted now, or ``None``.

    A bad REF (missing, unreadable, background only) is a one-line error before any model is
    loaded. The normaliser counts the patches it passes through unchanged instead of warning
    batch by batch: :func:`warn_unchanged` says how many, once, at the end.
    """
    if getattr(args, "stain_normalise", None) is None:
        return None
    from pcam.stain.macenko import StainNormaliser

    return StainNormaliser.from_path(args.stain_normalise, fit=fit, warn=False)


def warn_unchanged(prog: str, normaliser: StainNormaliser | None) -> None:
    """One warning line on stderr when ``normaliser`` passed patches through unchanged.

    ``pcam COMMAND: warning: stain normalisation: N of M patches passed through unchanged ...``
    """
    message = normaliser.unchanged_message() if normaliser is not None else None
    if message is not None:
        print(f"{prog}: warning: {message}", file=sys.stderr)


def add_data(parser: argparse.ArgumentParser, *, required: bool = True, help: str = "") -> None:
    """``--data``: a directory of PCam files."""
    parser.add_argument(
        "--data",
        type=Path,
        required=required,
        default=None,
        metavar="DIR",
        help=help or "directory of PCam files",
    )


def add_out(
    parser: argparse.ArgumentParser,
    help: str,
    *,
    required: bool = True,
    default: Path | None = None,
    metavar: str = "DIR",
) -> None:
    """``--out``: what the command writes."""
    parser.add_argument(
        "--out", type=Path, required=required, default=default, metavar=metavar, help=help
    )


def add_seed(parser: argparse.ArgumentParser, what: str = "random seed") -> None:
    """``--seed``: an integer >= 0, default 0."""
    parser.add_argument("--seed", type=seed, default=0, help=f"{what} (default: 0)")


def add_batch_size(parser: argparse.ArgumentParser, default: int) -> None:
    """``--batch-size``: an integer >= 1."""
    parser.add_argument(
        "--batch-size", type=count, default=default, help=f"batch size (default: {default})"
    )


def add_threshold(parser: argparse.ArgumentParser, what: str = "tumour") -> None:
    """``--threshold``: the tumour probability at or above which a patch is called tumour."""
    parser.add_argument(
        "--threshold",
        type=fraction,
        default=DEFAULT_THRESHOLD,
        help=f"probability at or above which a patch is {what} (default: {DEFAULT_THRESHOLD})",
    )


def add_tta(parser: argparse.ArgumentParser) -> None:
    """``--tta``: average predictions over the 8 symmetries of the square."""
    parser.add_argument(
        "--tta", action="store_true", help="average predictions over the 8 symmetries of the square"
    )


def add_splits(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--splits``: some of train, valid and test (default: all three)."""
    parser.add_argument(
        "--splits",
        nargs="+",
        choices=layout.SPLITS,
        default=list(layout.SPLITS),
        metavar="SPLIT",
        help=f"splits to {verb} (default: train valid test)",
    )


def add_overwrite(parser: argparse.ArgumentParser, help: str) -> None:
    """``--overwrite``: replace what pcam itself wrote there (never anything else)."""
    parser.add_argument("--overwrite", action="store_true", help=help)


# -- deprecated spellings --------------------------------------------------------------------------


class _DeprecatedOption(argparse.Action):
    """Store the value under the new option's destination, after one warning line."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.replacement = kwargs.pop("replacement")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        warn_deprecated(parser.prog, f"{option_string}", self.replacement)
        setattr(namespace, self.dest, values)


def add_deprecated_option(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any
) -> None:
    """Accept ``old`` (hidden from ``--help``) as a deprecated spelling of the option ``new``."""
    parser.add_argument(
        old,
        dest=dest,
        action=_DeprecatedOption,
        replacement=new,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **kwargs,
    )


def add_deprecated_positional(parser: argparse.ArgumentParser, metavar: str, new: str) -> None:
    """Accept a positional ``metavar`` (hidden) as a deprecated spelling of the option ``new``.

    :func:`resolve_deprecated_positionals` moves it to ``new``'s destination after parsing.
    """
    dest = "deprecated_" + new.lstrip("-").replace("-", "_")
    parser.add_argument(dest, nargs="?", type=Path, default=None, help=argparse.SUPPRESS)
    known = parser.get_default("deprecated_positionals") or ()
    parser.set_defaults(deprecated_positionals=(*known, (dest, metavar, new)))


def resolve_deprecated_positionals(
    args: argparse.Namespace, usage_error: Callable[[str], Any]
) -> None:
    """Give each deprecated positional's value to its option (one warning line), or refuse."""
    for dest, metavar, new in getattr(args, "deprecated_positionals", ()):
        old_value = getattr(args, dest)
        target = new.lstrip("-").replace("-", "_")
        if old_value is not None:
            if getattr(args, target) is not None:
                usage_error(f"pass {new} {metavar} or {metavar} alone, not both")
            warn_deprecated(f"pcam {args.command}", metavar, f"{new} {metavar}")
            setattr(args, target, old_value)
        elif getattr(args, target) is None:
            usage_error(f"the following arguments are required: {new}")


def warn_deprecated(prog: str, old: str, new: str) -> None:
    """One warning line on stderr: ``old`` still works for one release; ``new`` is the spelling."""
    print(
        f"{prog}: warning: {old} is deprecated and goes in the next release; use {new}",
        file=sys.stderr,
    )


# -- helpers of the commands -----------------------------------------------------------------------


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr for the ``with`` block; yields ``update_to(done)``."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=description,
        unit="patch",
        unit_scale=True,
        leave=False,
        file=sys.stderr,
        disable=None,
    )

    def update_to(done: int) -> None:
        bar.update(done - bar.n)

    try:
        yield update_to
    finally:
        bar.close()


def keras_verbosity() -> int | str:
    """Keras' ``verbose``: a progress bar on a terminal, one line per epoch in a log (2)."""
    return "auto" if sys.stdout.isatty() else 2


def listing(folder: Path) -> str:
    """The names in ``folder`` a user looks for, comma-separated (hidden files left out)."""
    return ", ".join(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))
