"""Mutation testing of the modules whose bugs are silent, each against its own tests only.

Usage: ``python tools/mutation.py [MODULE.py ...] [--jobs N] [--json PATH] [--keep] [--mutants
GLOB ...]`` (``tox -e mutation``). With no module it runs every module of :data:`TESTS_FOR`. For
each module it:

1. copies the repository (``pcam/``, ``tests/``, ``pyproject.toml``) to a fresh temporary
   directory and appends a ``[tool.mutmut]`` section to the copy's ``pyproject.toml`` that mutates
   that one module and selects its own test files (:data:`TESTS_FOR`). mutmut 3 writes its
   ``mutants/`` tree and state into the working directory, so every run (and every module) gets
   its own copy: concurrent runs, and other people working in the checkout, never clash;
2. runs ``python -m mutmut run`` there (pytest gets ``--hypothesis-seed=0``, so property tests
   draw the same examples on every run and the score is reproducible);
3. reads mutmut's per-module results (``mutants/<module>.meta``) and the diff of every survivor,
   prints a table and the survivors, and writes a JSON summary.

The score. Every mutant mutmut generates for the module counts, except the ones mutmut itself
skips (``# pragma: no mutate`` lines generate none; ``skipped`` is for mutants it declined to run):

    score = (killed + timeout + crashed) / (total - skipped)

``killed``: a test failed; ``timeout``: the tests ran past mutmut's CPU-time limit (an endless
loop is a detected bug); ``crashed``: the test process died (mutmut's ``segfault``, a signal).
``survived``, ``no tests`` (no selected test calls the mutated function) and ``suspicious``
count against the score. ``--mutants GLOB`` (repeatable; mutmut's own name filter, e.g.
``'pcam.data.split.x_inspect_array_file__*'``) runs only the mutants whose names match, and the
score, the counts and the survivors are then those of that subset alone: the report marks such a run
``subset``. It is for rerunning the survivors of a slow module after adding tests; the full run,
without ``--mutants``, is the one that measures a module. Survivors listed in
``tools/mutation_equivalents.toml`` with a reason are shown apart from the unexplained ones, but
they are **not** subtracted: an equivalent mutant still lowers the score. A module under
:data:`THRESHOLD` makes the script exit with status 1.

Equivalent mutants are keyed by mutmut's mutant name (``pcam.data.order.x_epoch_order__mutmut_56``)
together with the change it makes (its ``-``/``+`` lines). mutmut numbers the mutants of a function
in the order it generates them, so the names are stable while that function's source is unchanged;
editing the function renumbers its mutants. An entry whose recorded change no longer matches the
mutant of that name is reported as stale and the survivor counts as unexplained.

Why mutmut, and how it runs with TensorFlow. mutmut 3.8.1 is what the issue's baseline was measured
with; it mutates functions through trampolines (the mutated module is imported once and a switch
picks the mutant) and runs, for each mutant, only the selected tests that call the mutated
function. Its default ``process_isolation = "fork"`` forks each mutant's worker from the process
that ran the tests in-process to collect its stats. With TensorFlow that deadlocks: a worker whose
tests execute TensorFlow kernels waits for ever, at 0 % CPU, on the thread pools it inherited from
the parent (measured on ``pcam/data/colour.py``; mutants whose tests only fail while tracing got
through). mutmut's timeout is a CPU-time limit, so it never fires on such a hang. Its fork server
with the default warm-up (``forkserver_warmup = "collect"``) hangs alike, since collecting the
tests imports ``pcam.data.colour``, whose module-level ``tf.constant`` starts the runtime in the
server. What works is the fork server that imports only third-party modules before it forks
(``forkserver_warmup = "import"`` with :data:`PRELOADED`): importing TensorFlow starts no
runtime, so each worker starts its own, and no worker pays the import again (measured: about ten
times faster than ``forkserver_warmup = "none"``, which imports everything in every worker). This
script uses it for every module whose source or test files mention TensorFlow or Keras
(:func:`uses_tensorflow`), and plain fork for the others, which is faster still. A wall-clock
limit per module (``--timeout``) stops a run that hangs anyway. cosmic-ray was not needed: it
starts a fresh test process per mutant (TensorFlow's import for every mutant of every module),
and the issue's baseline was measured with mutmut.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (``tools/`` sits in it)."""

EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.toml"
"""Survivors accepted as equivalent (or not worth a test), each with a one-line reason."""

THRESHOLD = 85.0
"""Minimum mutation score, in percent, of every module."""

TESTS_FOR: dict[str, tuple[str, ...]] = {
    "pcam/data/order.py": ("tests/test_order.py",),
    "pcam/data/d4.py": ("tests/test_d4.py",),
    "pcam/data/reader.py": ("tests/test_reader.py",),
    "pcam/data/colour.py": ("tests/test_stream.py",),
    "pcam/data/split.py": (
        "tests/test_split.py",
        "tests/test_malformed.py",
        "tests/test_deep_check.py",
    ),
    "pcam/data/verify.py": ("tests/test_deep_check.py",),
    "pcam/data/download.py": ("tests/test_download.py",),
    "pcam/outputs.py": ("tests/test_outputs.py",),
    "pcam/evaluation/metrics.py": ("tests/test_metrics.py",),
    "pcam/evaluation/calibration.py": ("tests/test_calibration.py",),
    "pcam/evaluation/predictions.py": (
        "tests/test_metrics.py",
        "tests/test_calibration.py",
        "tests/test_operating.py",
        "tests/test_temperature.py",
    ),
    "pcam/evaluation/operating.py": ("tests/test_operating.py",),
    "pcam/evaluation/temperature.py": ("tests/test_temperature.py",),
    "pcam/model/temperature.py": ("tests/test_temperature.py",),
    "pcam/explain/cam_quality.py": ("tests/test_cam_quality.py",),
    "pcam/explain/gradcam.py": ("tests/test_gradcam.py",),
    "pcam/model/heads.py": ("tests/test_heads.py", "tests/test_gradcam.py"),
    "pcam/moved.py": ("tests/test_moved.py",),
    "pcam/stain/hed.py": ("tests/test_hed.py",),
    "pcam/stain/augment.py": ("tests/test_hed.py",),
    "pcam/stain/macenko.py": ("tests/test_macenko.py",),
}
"""Each mutated module and its own test files: a mutant must be killed by these alone."""

NOT_MUTATED: dict[str, tuple[str, ...]] = {
    "pcam/explain/gradcam.py": (
        "__init__",
        "_check_images",
        "spatial_layers",
        "_output_shape",
        "_find_layer",
        "_forward_function",
        "_check_forward",
    ),
    "pcam/moved.py": ("create_module",),
    "pcam/evaluation/temperature.py": ("split_log_odds", "calibrate", "_figures"),
}
"""Functions left out of a module's mutation, by name: the issue asks for Grad-CAM's arithmetic
(the score, the gradients, the weights, the maps, their normalisation and upsampling), not its
model plumbing (finding layers, building the forward function, checking inputs), whose failures
are loud errors that the Grad-CAM tests already meet. Reading the head is :mod:`pcam.model.heads`,
mutated whole. ``MovedModuleLoader.create_module`` is left out because mutmut's trampoline
would put a frame of its own between the warning and the importing line that the warning must
point at (the test of that would fail for every mutant); its message comes from
``deprecation_message``, which is mutated. ``pcam calibrate``'s job (``split_log_odds``,
``calibrate``, ``_figures``) is plumbing around the fit: ``tests/test_calibrate.py`` runs it end to
end on a trained model, seconds per test, too slow to run for every mutant; the fit itself and the
calibration file are mutated whole. The copy marks each such ``def``
``# pragma: no mutate block``; the package source stays unmarked."""

PRELOADED = ("numpy", "h5py", "sklearn", "hypothesis", "tensorflow", "keras")
"""Third-party modules the fork server imports before it forks the workers of a TensorFlow module
(mutmut's ``forkserver_warmup = "import"``): importing TensorFlow starts no runtime, so a forked
worker runs TensorFlow ops fine, and it does not pay the import for every mutant."""

TENSORFLOW_MARKERS = ("tensorflow", "keras")
"""Text that marks a module or test file as running TensorFlow (see :func:`uses_tensorflow`)."""

COPIED = ("pcam", "tests", "pyproject.toml", "README.md")
"""What a module's temporary copy of the repository holds."""

PYTEST_ARGS = ("-p", "no:cacheprovider", "-q", "--hypothesis-seed=0")
"""Extra pytest arguments of every mutant's test run."""

DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
"""mutmut statuses that count as a detected mutant."""

_DIFFS_SCRIPT = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
path, names = sys.argv[1], sys.argv[2:]
print(json.dumps({name: get_diff_for_mutant(name, path=path) for name in names}))
"""


@dataclass
class Survivor:
    """A mutant no selected test killed."""

    name: str
    status: str
    """``survived``, ``no tests`` or ``suspicious``."""
    change: str
    """The ``-``/``+`` lines of the mutation, stripped, joined with `` | ``."""
    diff: str
    reason: str | None = None
    """Why it is accepted, from the equivalents file; ``None`` when unexplained."""
    stale: bool = False
    """An equivalents entry exists for this name but records another change."""


@dataclass
class ModuleResult:
    """The outcome of mutating one module."""

    module: str
    tests: list[str]
    counts: dict[str, int]
    total: int
    skipped: int
    detected: int
    score: float
    seconds: float
    survivors: list[Survivor] = field(default_factory=list)
    error: str | None = None
    selection: list[str] = field(default_factory=list)
    """The ``--mutants`` globs of a subset run; empty when every mutant of the module ran."""

    @property
    def passed(self) -> bool:
        """Whether the run worked and the score reaches the threshold."""
        return self.error is None and self.score >= THRESHOLD


def change_of(diff: str) -> str:
    """The changed lines of a unified diff, stripped of indentation, joined with `` | ``."""
    lines = [
        line[0] + " " + line[1:].strip()
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return " | ".join(lines)


def load_equivalents(path: Path = EQUIVALENTS) -> dict[str, dict[str, str]]:
    """The accepted survivors: mutant name to ``{"change": ..., "reason": ...}``."""
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    entries: dict[str, dict[str, str]] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not {"change", "reason"} <= entry.keys():
            raise SystemExit(f"{path}: [{name!r}] needs a `change` and a `reason`")
        entries[name] = {"change": str(entry["change"]), "reason": str(entry["reason"])}
    return entries


def make_copy(module: str, workdir: Path) -> Path:
    """Copy the repository into ``workdir`` and configure mutmut for ``module``; returns it."""
    copy = workdir / "repo"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache", "mutants")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=ignore)
        else:
            shutil.copy2(source, copy / name)
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    if "mutmut" in tomllib.loads(text).get("tool", {}):
        raise SystemExit("pyproject.toml: remove [tool.mutmut]; tools/mutation.py writes its own")
    config: dict[str, Any] = {
        "source_paths": ["pcam"],
        "only_mutate": [module],
        "pytest_add_cli_args_test_selection": list(TESTS_FOR[module]),
        "pytest_add_cli_args": list(PYTEST_ARGS),
        "use_git_change_detection": False,
        "also_copy": ["README.md"],  # tests read it (the documented tables and examples)
    }
    if uses_tensorflow(module):  # see the module docstring: forked TensorFlow runtimes deadlock
        preload = copy / "mutmut_preload.txt"
        preload.write_text("\n".join(PRELOADED) + "\n", encoding="utf-8")
        config |= {
            "process_isolation": "forkserver",
            "forkserver_warmup": "import",
            "preload_modules_file": str(preload),
        }
    if module in NOT_MUTATED:
        mark_not_mutated(copy / module, NOT_MUTATED[module])
    lines = ["", "[tool.mutmut]"] + [
        f"{key} = {json.dumps(value)}" for key, value in config.items()
    ]
    pyproject.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")
    return copy


def mark_not_mutated(path: Path, functions: tuple[str, ...]) -> None:
    """Mark each ``def`` of ``functions`` in ``path`` with mutmut's ``no mutate block`` pragma.

    The pragma goes on the line that ends the signature (``...):`` or ``... -> T:``).
    """
    lines = path.read_text(encoding="utf-8").split("\n")
    pending = False
    found: set[str] = set()
    for index, line in enumerate(lines):
        definition = re.match(r"\s*def (\w+)\(", line)
        if definition and definition.group(1) in functions:
            pending = True
            found.add(definition.group(1))
        if pending and re.search(r"\)( -> .+)?:$", line):
            lines[index] = f"{line}  # pragma: no mutate block"
            pending = False
    missing = sorted(set(functions) - found)
    if missing:
        raise SystemExit(f"{path}: no function {', '.join(missing)} to leave out of the mutation")
    path.write_text("\n".join(lines), encoding="utf-8")


def uses_tensorflow(module: str) -> bool:
    """Whether ``module`` or one of its test files mentions TensorFlow or Keras."""
    for name in (module, *TESTS_FOR[module]):
        text = (ROOT / name).read_text(encoding="utf-8")
        if any(marker in text for marker in TENSORFLOW_MARKERS):
            return True
    return False


def run_env() -> dict[str, str]:
    """The environment of the mutmut run: quiet TensorFlow, the real shared data if present."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONHASHSEED", "0")
    shared = ROOT.parent / "shared" / "data"
    if "PCAM_SHARED_DATA" not in env and shared.is_dir():
        # the copy lives elsewhere, so tests cannot find ../shared/data relative to it
        env["PCAM_SHARED_DATA"] = str(shared)
    return env


def mutate(
    module: str, jobs: int, keep: bool, timeout: float, selection: list[str] | None = None
) -> ModuleResult:
    """Run mutmut on ``module`` in a temporary copy of the repository and collect the result.

    ``selection``: mutmut name globs; only the matching mutants run and are counted.
    """
    # the tool's own mapping of exit codes to statuses (imported late: only this env has mutmut)
    status_by_exit_code = importlib.import_module("mutmut.stats").status_by_exit_code

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pcam-mutation-"))
    tests = list(TESTS_FOR[module])
    selection = list(selection or [])
    try:
        copy = make_copy(module, workdir)
        log = workdir / "mutmut.log"
        command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *selection]
        with log.open("w", encoding="utf-8") as out:
            # its own process group, so that its forked workers end with it
            process = subprocess.Popen(
                command,
                cwd=copy,
                env=run_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                returncode: int | str = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = f"a timeout ({timeout:g} s)"
            finally:  # a timeout, Ctrl-C or SIGTERM: leave no worker behind
                _kill_group(process)
        meta = copy / "mutants" / (module + ".meta")
        if returncode != 0 or not meta.exists():
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            return ModuleResult(
                module,
                tests,
                {},
                0,
                0,
                0,
                0.0,
                time.monotonic() - started,
                error=f"mutmut ended with {returncode}; log tail:\n{tail}",
                selection=selection,
            )
        exit_codes: dict[str, int | None] = json.loads(meta.read_text(encoding="utf-8"))[
            "exit_code_by_key"
        ]
        if selection:  # the same matching as mutmut's own filter
            exit_codes = {
                name: code
                for name, code in exit_codes.items()
                if name in selection or any(fnmatch.fnmatch(name, glob) for glob in selection)
            }
        statuses = {name: str(status_by_exit_code[code]) for name, code in exit_codes.items()}
        counts: dict[str, int] = {}
        for status in statuses.values():
            counts[status] = counts.get(status, 0) + 1
        total = len(statuses)
        skipped = counts.get("skipped", 0)
        detected = sum(counts.get(status, 0) for status in DETECTED)
        considered = total - skipped
        score = 100.0 * detected / considered if considered else 100.0
        undetected = sorted(
            (name for name, status in statuses.items() if status not in DETECTED | {"skipped"}),
            key=_natural_key,
        )
        diffs = _diffs(copy, module, undetected)
        survivors = [
            Survivor(name, statuses[name], change_of(diffs[name]), diffs[name])
            for name in undetected
        ]
        return ModuleResult(
            module,
            tests,
            counts,
            total,
            skipped,
            detected,
            score,
            time.monotonic() - started,
            survivors,
            selection=selection,
        )
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process group of ``process`` (mutmut and its workers) if any of it still runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _natural_key(name: str) -> tuple[str, int]:
    """Sort ``..._mutmut_9`` before ``..._mutmut_10``."""
    stem, _, number = name.rpartition("_")
    return (stem, int(number)) if number.isdigit() else (name, 0)


def _diffs(copy: Path, module: str, names: list[str]) -> dict[str, str]:
    """The diff of each mutant, computed in the copy, where mutmut keeps its state."""
    if not names:
        return {}
    result = subprocess.run(
        [sys.executable, "-c", _DIFFS_SCRIPT, module, *names],
        cwd=copy,
        env=run_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    diffs: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return diffs


def explain(result: ModuleResult, equivalents: dict[str, dict[str, str]]) -> None:
    """Attach the reasons of the equivalents file to the survivors it explains."""
    for survivor in result.survivors:
        entry = equivalents.get(survivor.name)
        if entry is None:
            continue
        if entry["change"] == survivor.change:
            survivor.reason = entry["reason"]
        else:
            survivor.stale = True


def report(results: list[ModuleResult]) -> str:
    """The human-readable report: a table, then unexplained and explained survivors."""
    header = (
        f"{'module':<24} {'total':>5} {'killed':>6} {'t/o':>4} {'crash':>5} {'surv':>5} "
        f"{'no-t':>5} {'skip':>4} {'score':>7}  {'status'}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        c = r.counts
        status = "ERROR" if r.error else ("ok" if r.passed else f"UNDER {THRESHOLD:g}%")
        if r.selection:
            status += " subset"
        lines.append(
            f"{r.module:<24} {r.total:>5} {c.get('killed', 0):>6} {c.get('timeout', 0):>4} "
            f"{c.get('segfault', 0):>5} {c.get('survived', 0):>5} {c.get('no tests', 0):>5} "
            f"{r.skipped:>4} {r.score:>6.1f}%  {status} ({r.seconds:.0f} s)"
        )
    lines.append(
        "score = (killed + timeout + crashed) / (total - skipped); explained survivors still count"
    )
    for r in results:
        if r.error:
            lines += ["", f"== {r.module}: {r.error}"]
            continue
        unexplained = [s for s in r.survivors if s.reason is None]
        explained = [s for s in r.survivors if s.reason is not None]
        if unexplained:
            lines += ["", f"== {r.module}: {len(unexplained)} unexplained survivors"]
            for s in unexplained:
                note = " (stale entry in the equivalents file)" if s.stale else ""
                lines += [f"-- {s.name} [{s.status}]{note}", s.diff.rstrip()]
        if explained:
            lines += ["", f"== {r.module}: {len(explained)} explained survivors"]
            lines += [f"   {s.name}: {s.change}\n      -> {s.reason}" for s in explained]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the mutation tests; 0 when every module reaches the threshold, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("modules", nargs="*", help="module files, e.g. pcam/data/order.py")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutmut workers")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(os.environ.get("PCAM_MUTATION_JSON", "mutation-summary.json")),
        help="where to write the JSON summary (default $PCAM_MUTATION_JSON or ./%(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument(
        "--mutants",
        action="append",
        default=[],
        metavar="GLOB",
        help="run (and score) only the mutants whose mutmut names match; repeatable",
    )
    parser.add_argument(
        "--timeout", type=float, default=5400.0, help="wall-clock seconds per module (%(default)s)"
    )
    args = parser.parse_args(argv)
    # SIGTERM (a cancelled CI job, tox stopping) unwinds like Ctrl-C, so no mutmut run is orphaned
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    modules = [Path(m).as_posix() for m in args.modules] or list(TESTS_FOR)
    unknown = [m for m in modules if m not in TESTS_FOR]
    if unknown:
        parser.error(f"no test files mapped for {unknown}; known: {', '.join(TESTS_FOR)}")
    equivalents = load_equivalents()
    results: list[ModuleResult] = []
    for module in modules:
        print(f"mutating {module} against {', '.join(TESTS_FOR[module])} ...", flush=True)
        result = mutate(module, args.jobs, args.keep, args.timeout, args.mutants)
        explain(result, equivalents)
        results.append(result)
        print(f"   {result.score:.1f}% in {result.seconds:.0f} s", flush=True)
    print(report(results))
    summary: dict[str, Any] = {
        "tool": "mutmut",
        "threshold": THRESHOLD,
        "score": "(killed + timeout + crashed) / (total - skipped), in percent",
        "modules": [asdict(r) | {"passed": r.passed} for r in results],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"summary written to {args.json}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
