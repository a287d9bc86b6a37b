"""The module paths of pcam before its package layout, kept working as aliases of the new ones.

``import pcam.gradcam`` (or ``from pcam.gradcam import GradCAM``) still works: the import gives
the very module object of :mod:`pcam.explain.gradcam`, so monkeypatching, ``isinstance`` and
identity checks behave exactly as with the new path. The first import of an old path emits a
``DeprecationWarning`` that names the new one. Submodules of a moved package follow it
(``pcam.app.logic`` is ``pcam.serve.app.logic``).

Two old modules became packages of the same name and re-export what they held instead:
``pcam.model`` (from :mod:`pcam.model.architectures`) and ``pcam.explain`` (from
:mod:`pcam.explain.explanation`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Final

MOVED: Final[dict[str, str]] = {
    "pcam.download": "pcam.data.download",
    "pcam.report": "pcam.data.summary",
    "pcam.heads": "pcam.model.heads",
    "pcam.weights": "pcam.model.weights",
    "pcam.inference": "pcam.model.inference",
    "pcam.train": "pcam.model.train",
    "pcam.backup": "pcam.model.backup",
    "pcam.multiworker": "pcam.model.multiworker",
    "pcam.metrics": "pcam.evaluation.metrics",
    "pcam.plots": "pcam.evaluation.plots",
    "pcam.evaluate": "pcam.evaluation.evaluate",
    "pcam.gradcam": "pcam.explain.gradcam",
    "pcam.cam_quality": "pcam.explain.cam_quality",
    "pcam.explain_plots": "pcam.explain.plots",
    "pcam.patch_io": "pcam.data.patch_io",
    "pcam.predict": "pcam.serve.predict",
    "pcam.app": "pcam.serve.app",
    "pcam.quiet": "pcam.cli.quiet",
}
"""Each old module path and the path of the same module now."""


def new_name(old: str) -> str | None:
    """The current path of the module once importable as ``old``, or ``None`` if it did not move.

    A submodule of a moved package moves with it: ``pcam.app.logic`` is ``pcam.serve.app.logic``.
    """
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before) :]
    return None


def deprecation_message(old: str, new: str) -> str:
    """The warning of an import through the old path ``old`` of the module now at ``new``."""
    return (
        f"{old} has moved to {new}; import it from there "
        "(the old path is an alias that will be removed in a later release)"
    )


class MovedModuleLoader(importlib.abc.Loader):
    """Loads an old path as the module already imported (or now imported) from its new path."""

    def __init__(self, old: str, new: str) -> None:
        self.old = old
        self.new = new
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """The module at the new path, after a warning that the old path is deprecated.

        ``stacklevel=2`` points the warning at the importing line: Python skips the import
        system's own frames.
        """
        warnings.warn(deprecation_message(self.old, self.new), DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module ran at its new path. Gives it back its own spec."""
        module.__spec__ = self.spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old module paths of :data:`MOVED`, and nothing else."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec that loads ``fullname`` as its new module, if ``fullname`` is an old path."""
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, MovedModuleLoader(fullname, new))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once), ahead of the file system's finder.

    First, because the file system would otherwise find ``pcam.app.logic`` again through the
    aliased parent's ``__path__`` and load a second copy of the module.
    """
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())


def lazy_attributes(package: str, module: str, names: Sequence[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that serves ``names`` from ``module``.

    ``module`` is imported on the first such name used, so importing ``package`` stays cheap
    (no TensorFlow); any other name raises the usual ``AttributeError``.
    """
    served = frozenset(names)

    def get_attribute(name: str) -> Any:
        if name in served:
            return getattr(importlib.import_module(module), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return get_attribute
