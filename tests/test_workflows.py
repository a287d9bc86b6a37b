"""The GitHub Actions workflows: schema, zizmor, the tox environments they call, and the guards.

Every check is a function returning the problems it finds, run on the real workflows (expecting
none) and, where it could otherwise pass vacuously, on a deliberately bad workflow (expecting
some). The schema check and zizmor run as subprocesses and skip cleanly where not installed.
"""

from __future__ import annotations

import configparser
import functools
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
EXPECTED = ("benchmarks.yml", "ci.yml", "gpu.yml")
WORKFLOWS = sorted({path.name for path in WORKFLOWS_DIR.glob("*.y*ml")} | set(EXPECTED))
DEPENDABOT = ROOT / ".github" / "dependabot.yml"
GPU_RUNNER = ["self-hosted", "linux", "gpu"]
TOOL_TIMEOUT = 120

_FULL_SHA = re.compile(r"@[0-9a-f]{40}$")
_VERSION_COMMENT = r"\s+#\s*v\d+(?:\.\d+){0,2}\b"
_EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)

BAD_WORKFLOW = """\
name: bad
on:
  pull_request_target:
permissions: write-all
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}" && python -m tox -e nope
"""


# -- loading -------------------------------------------------------------------------------------


def _parse_yaml(text: str) -> Any:
    # ruamel.yaml comes with check-jsonschema (test dependency group). It reads YAML 1.2, where
    # the key `on` is a string; PyYAML (YAML 1.1) would read it as True, which _triggers handles.
    ruamel_yaml = pytest.importorskip("ruamel.yaml")
    return ruamel_yaml.YAML(typ="safe", pure=True).load(text)


@functools.cache
def _text(name: str) -> str:
    path = WORKFLOWS_DIR / name
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return path.read_text(encoding="utf-8")


@functools.cache
def _load(name: str) -> dict[Any, Any]:
    workflow = _parse_yaml(_text(name))
    assert isinstance(workflow, dict), f"{name}: not a YAML mapping"
    return workflow


def _triggers(workflow: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: {}}
    if isinstance(on, list):
        return {str(event): {} for event in on}
    assert isinstance(on, dict), "the workflow has no `on:` triggers"
    return {str(event): config or {} for event, config in on.items()}


def _jobs(workflow: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    jobs = workflow.get("jobs")
    assert isinstance(jobs, dict), "the workflow has no jobs"
    assert jobs, "the workflow has no jobs"
    return jobs


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job.get("steps") or []
    assert isinstance(steps, list)
    return steps


def _scripts(job: dict[str, Any]) -> list[str]:
    return [str(step["run"]) for step in _steps(job) if "run" in step]


# -- tox.ini -------------------------------------------------------------------------------------


@functools.cache
def _tox_config() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The environments of tox.ini, its labels, and the environments labelled ``ci``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini", encoding="utf-8")
    envs = {
        section.split(":", 1)[1] for section in parser.sections() if section.startswith("testenv:")
    }
    env_list = parser.get("tox", "env_list", fallback=parser.get("tox", "envlist", fallback=""))
    envs |= {name for name in re.split(r"[\s,]+", env_list) if name}
    labels: dict[str, set[str]] = {}
    for env in envs:
        section = f"testenv:{env}"
        value = parser.get(section, "labels", fallback="") if parser.has_section(section) else ""
        for label in re.split(r"[\s,]+", value):
            if label:
                labels.setdefault(label, set()).add(env)
    for line in parser.get("tox", "labels", fallback="").splitlines():
        label, sep, members = line.partition("=")
        if sep:
            labels.setdefault(label.strip(), set()).update(re.split(r"[\s,]+", members.strip()))
    return frozenset(envs), frozenset(labels), frozenset(labels.get("ci", set()))


def _tox_calls(script: str) -> list[tuple[str, str]]:
    """``(kind, name)`` of every tox invocation in a shell script: kind ``env`` for ``-e a,b``,
    ``label`` for ``-m LABEL...``, ``default`` for a bare ``tox`` (its env_list).

    A command is a tox call when its first word is ``tox`` (or ends in ``/tox``) or it runs
    ``python -m tox``; arguments after ``--`` belong to the command tox runs, not to tox.
    """
    calls: list[tuple[str, str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        for segment in re.split(r"&&|\|\||[;|]", line):
            try:
                words = shlex.split(segment, comments=True)
            except ValueError:  # an unclosed quote: a multi-line string starts on this line
                words = segment.split()
            for index, word in enumerate(words):
                first = index == 0 and (word == "tox" or word.endswith("/tox"))
                if not (first or (word == "tox" and index > 0 and words[index - 1] == "-m")):
                    continue
                args = words[index + 1 :]
                args = args[: args.index("--")] if "--" in args else args
                calls.extend(_tox_targets(args))
    return calls


def _tox_targets(args: list[str]) -> list[tuple[str, str]]:
    targets: list[tuple[str, str]] = []
    kind = ""
    for arg in args:
        if arg in ("-e", "--env"):
            kind = "env"
        elif arg in ("-m", "--labels"):
            kind = "label"
        elif arg.startswith("-"):
            kind = ""
        elif kind == "env":
            targets.extend(("env", name) for name in arg.split(",") if name)
            kind = ""
        elif kind == "label":  # -m takes one label or more
            targets.append(("label", arg))
    return targets or [("default", "")]


# -- checks: each returns the problems it finds --------------------------------------------------


def _tox_problems(workflow: dict[Any, Any]) -> list[str]:
    envs, labels, _ = _tox_config()
    problems: list[str] = []
    calls = 0
    for job_id, job in _jobs(workflow).items():
        for script in _scripts(job):
            for kind, name in _tox_calls(script):
                calls += 1
                if (kind == "env" and name not in envs) or (kind == "label" and name not in labels):
                    problems.append(f"{job_id}: tox {kind} {name!r} is not in tox.ini")
    if not calls:
        problems.append("no job calls tox")
    return problems


def _unpinned_uses(workflow: dict[Any, Any], text: str) -> list[str]:
    problems: list[str] = []
    for job_id, job in _jobs(workflow).items():
        uses = [job["uses"]] if "uses" in job else []
        uses += [step["uses"] for step in _steps(job) if "uses" in step]
        for ref in map(str, uses):
            if ref.startswith("./"):
                continue
            if ref.startswith("docker://"):
                if "@sha256:" not in ref:
                    problems.append(f"{job_id}: {ref} is not pinned to a digest")
            elif not _FULL_SHA.search(ref):
                problems.append(f"{job_id}: {ref} is not pinned to a full commit SHA")
            elif not re.search(re.escape(ref) + _VERSION_COMMENT, text):
                problems.append(f"{job_id}: {ref} has no `# vX.Y.Z` comment")
    return problems


def _permission_problems(workflow: dict[Any, Any]) -> list[str]:
    def check(where: str, permissions: Any) -> list[str]:
        if permissions in ("read-all", {}):
            return []
        if not isinstance(permissions, dict):
            return [f"{where}: permissions {permissions!r} are not read-only"]
        return [
            f"{where}: {scope}: {access}"
            for scope, access in permissions.items()
            if access not in ("read", "none")
        ]

    if "permissions" not in workflow:
        return ["no top-level permissions (the token would get the repository's default)"]
    problems = check("top level", workflow["permissions"])
    for job_id, job in _jobs(workflow).items():
        if "permissions" in job:
            problems += check(job_id, job["permissions"])
    return problems


def _persisted_credentials(workflow: dict[Any, Any]) -> list[str]:
    return [
        f"{job_id}: {step['uses']} without persist-credentials: false"
        for job_id, job in _jobs(workflow).items()
        for step in _steps(job)
        if str(step.get("uses", "")).startswith("actions/checkout@")
        and (step.get("with") or {}).get("persist-credentials") is not False
    ]


def _missing_timeouts(workflow: dict[Any, Any]) -> list[str]:
    return [
        f"{job_id}: no timeout-minutes"
        for job_id, job in _jobs(workflow).items()
        if "uses" not in job and "timeout-minutes" not in job
    ]


def _expressions_in_scripts(workflow: dict[Any, Any]) -> list[str]:
    # zizmor reports the dangerous ones (template injection); this stricter rule keeps every
    # value, trusted or not, out of the script text: values reach scripts through `env:`.
    return [
        f"{job_id}: `${{{{{expression.strip()}}}}}` in a run script"
        for job_id, job in _jobs(workflow).items()
        for script in _scripts(job)
        for expression in _EXPRESSION.findall(script)
    ]


def _dangerous_triggers(workflow: dict[Any, Any]) -> list[str]:
    return [
        f"triggered by {event}"
        for event in _triggers(workflow)
        if event in ("pull_request_target", "workflow_run")
    ]


CHECKS: dict[str, Callable[[dict[Any, Any], str], list[str]]] = {
    "tox": lambda workflow, text: _tox_problems(workflow),
    "pins": _unpinned_uses,
    "permissions": lambda workflow, text: _permission_problems(workflow),
    "credentials": lambda workflow, text: _persisted_credentials(workflow),
    "timeouts": lambda workflow, text: _missing_timeouts(workflow),
    "expressions": lambda workflow, text: _expressions_in_scripts(workflow),
    "triggers": lambda workflow, text: _dangerous_triggers(workflow),
}


def _evaluate_if(condition: str, event_name: str, label: str | None) -> bool:
    """Evaluate a job's ``if:`` for one event; only the contexts a label gate needs are known.

    Any other context or function raises ``NameError``: extend this when the gate grows.
    """
    expression = condition.strip()
    if expression.startswith("${{") and expression.endswith("}}"):
        expression = expression[3:-2]
    python = (
        expression.replace("github.event.label.name", "label")
        .replace("github.event_name", "event_name")
        .replace("&&", " and ")
        .replace("||", " or ")
    )
    python = re.sub(r"!(?!=)", " not ", python)
    env = {"label": label, "event_name": event_name, "null": None, "true": True, "false": False}
    return bool(eval(python, {"__builtins__": {}}, env))


def _label_gate_problems(workflow: dict[Any, Any], label: str) -> list[str]:
    problems: list[str] = []
    pull_request = _triggers(workflow).get("pull_request")
    if pull_request is None:
        return ["no pull_request trigger"]
    if pull_request.get("types") != ["labeled"]:
        problems.append(f"pull_request types {pull_request.get('types')!r}, not ['labeled']")
    cases = [
        ("pull_request", label, True),
        ("pull_request", f"not-{label}", False),
        ("pull_request", None, False),
        *((event, None, True) for event in _triggers(workflow) if event != "pull_request"),
    ]
    for job_id, job in _jobs(workflow).items():
        condition = str(job.get("if", "true"))
        for event, applied, expected in cases:
            if _evaluate_if(condition, event, applied) != expected:
                problems.append(
                    f"{job_id}: if: {condition!r} is {not expected} "
                    f"for {event} labelled {applied!r}"
                )
    return problems


# -- the tools -----------------------------------------------------------------------------------


def _console_script(name: str) -> str | None:
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / name
        if candidate.is_file():
            return str(candidate)
    return shutil.which(name)


def _check_jsonschema(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("check_jsonschema") is not None:
        command = [sys.executable, "-m", "check_jsonschema"]
    elif script := _console_script("check-jsonschema"):
        command = [script]
    else:
        pytest.skip("check-jsonschema is not installed")
    return subprocess.run(
        [*command, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def _zizmor(*args: str | Path) -> list[dict[str, Any]]:
    """zizmor's findings (offline audits, JSON) for the given files."""
    zizmor = _console_script("zizmor")
    if zizmor is None:
        pytest.skip("zizmor is not installed")
    result = subprocess.run(
        [zizmor, "--offline", "--no-progress", "--format", "json", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
        cwd=ROOT,
    )
    # 0: no findings; 10 to 14: findings, by highest severity; anything else: zizmor failed.
    assert result.returncode == 0 or 10 <= result.returncode <= 14, result.stderr
    findings = json.loads(result.stdout or "[]")
    assert isinstance(findings, list)
    return findings


def _describe(finding: dict[str, Any]) -> str:
    determinations = finding.get("determinations", {})
    where = ""
    for location in finding.get("locations", []):
        concrete = location.get("concrete", {})
        key = location.get("symbolic", {}).get("key", {}).get("Local", {})
        row = concrete.get("location", {}).get("start_point", {}).get("row")
        path = key.get("given_path") or key.get("verbatim_path") or ""
        where = f"{path}:{row + 1 if isinstance(row, int) else '?'}: {concrete.get('feature', '')}"
        break
    return (
        f"{finding.get('ident')} ({determinations.get('severity')}, "
        f"confidence {determinations.get('confidence')}): {finding.get('desc')} at {where}"
    )


# -- the files, the schema and zizmor ------------------------------------------------------------


def test_the_workflows_exist() -> None:
    missing = [name for name in EXPECTED if not (WORKFLOWS_DIR / name).is_file()]
    assert not missing, f"missing workflows: {missing}"


def test_workflows_match_the_github_workflow_schema() -> None:
    files = [WORKFLOWS_DIR / name for name in WORKFLOWS]
    result = _check_jsonschema("--builtin-schema", "vendor.github-workflows", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_config_matches_its_schema() -> None:
    if not DEPENDABOT.is_file():
        pytest.skip("no .github/dependabot.yml")
    result = _check_jsonschema("--builtin-schema", "vendor.dependabot", DEPENDABOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_job_without_runs_on(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\non: push\njobs:\n  x:\n    steps:\n      - run: echo hi\n")
    result = _check_jsonschema("--builtin-schema", "vendor.github-workflows", bad)
    assert result.returncode != 0
    assert "runs-on" in result.stdout + result.stderr


def test_zizmor_finds_nothing_of_high_severity() -> None:
    inputs = [WORKFLOWS_DIR / name for name in WORKFLOWS]
    inputs += [DEPENDABOT] if DEPENDABOT.is_file() else []
    findings = _zizmor(*inputs)
    high = [
        _describe(finding)
        for finding in findings
        if finding.get("determinations", {}).get("severity") == "High"
        and not finding.get("ignored", False)
    ]
    assert not high, "zizmor, high severity:\n" + "\n".join(high)


def test_zizmor_reports_a_template_injection(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    findings = _zizmor("--no-config", bad)
    idents = {
        finding.get("ident")
        for finding in findings
        if finding.get("determinations", {}).get("severity") == "High"
    }
    assert "template-injection" in idents, [_describe(finding) for finding in findings]
    assert "dangerous-triggers" in idents, [_describe(finding) for finding in findings]


# -- structural checks on every workflow ---------------------------------------------------------


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_passes_check(name: str, check: str) -> None:
    problems = CHECKS[check](_load(name), _text(name))
    assert not problems, f"{name}, {check}:\n" + "\n".join(problems)


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_each_check_catches_a_bad_workflow(check: str) -> None:
    assert CHECKS[check](_parse_yaml(BAD_WORKFLOW), BAD_WORKFLOW)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("python -m tox -e lint", [("env", "lint")]),
        ("tox -e lint,types", [("env", "lint"), ("env", "types")]),
        ("tox -m ci", [("label", "ci")]),
        ('"$RUNNER_TEMP/tox/bin/python" -m tox -e gpu', [("env", "gpu")]),
        ("tox exec -qq -e bench -- python -m pytest -e x", [("env", "bench")]),
        ("cd base && python -m tox -e bench -- \\\n  --benchmark-save=base", [("env", "bench")]),
        ("python -m tox", [("default", "")]),
        ('python -m pip install "tox==4.0" tox-uv\necho tox -e nope', []),
    ],
)
def test_tox_calls_are_found(script: str, expected: list[tuple[str, str]]) -> None:
    assert _tox_calls(script) == expected


def test_the_tox_check_rejects_unknown_envs_and_labels() -> None:
    workflow = {"jobs": {"x": {"steps": [{"run": "tox -e lint,nope && tox -m nolabel"}]}}}
    assert _tox_problems(workflow) == [
        "x: tox env 'nope' is not in tox.ini",
        "x: tox label 'nolabel' is not in tox.ini",
    ]


# -- ci.yml --------------------------------------------------------------------------------------


def test_ci_runs_on_pull_requests_and_pushes_to_main() -> None:
    triggers = _triggers(_load("ci.yml"))
    assert "pull_request" in triggers
    assert "main" in triggers.get("push", {}).get("branches", [])


def test_ci_cancels_superseded_pull_request_runs() -> None:
    concurrency = _load("ci.yml").get("concurrency")
    assert isinstance(concurrency, dict)
    group = str(concurrency.get("group"))
    assert "github.workflow" in group
    assert "github.event.pull_request.number" in group or "github.ref" in group
    assert concurrency.get("cancel-in-progress") not in (None, False)


def test_ci_runs_every_tox_env_labelled_ci() -> None:
    called = {
        name
        for job in _jobs(_load("ci.yml")).values()
        for script in _scripts(job)
        for kind, name in _tox_calls(script)
        if kind == "env"
    }
    _, _, ci_envs = _tox_config()
    assert ci_envs, "tox.ini labels no environment `ci`"
    assert ci_envs <= called, f"ci.yml never runs {sorted(ci_envs - called)}"


def test_ci_tests_every_supported_python() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    minimum = re.search(r'requires-python\s*=\s*">=\s*3\.(\d+)"', pyproject)
    assert minimum, "pyproject.toml: requires-python >= 3.X not found"
    tests = _jobs(_load("ci.yml"))["tests"]
    versions = [str(v) for v in tests["strategy"]["matrix"]["python"]]
    minors = sorted(int(version.split(".")[1]) for version in versions)
    assert minors[0] == int(minimum.group(1)), f"{versions} do not start at requires-python"
    assert minors == list(range(minors[0], minors[-1] + 1)), f"{versions} skip a version"
    assert len(minors) >= 3
    assert any(
        kind == "env" and name == "tests" for s in _scripts(tests) for kind, name in _tox_calls(s)
    )


def test_ci_has_one_aggregate_job_needing_all_others() -> None:
    jobs = _jobs(_load("ci.yml"))
    aggregates = [job_id for job_id, job in jobs.items() if "always()" in str(job.get("if", ""))]
    assert len(aggregates) == 1, f"aggregate jobs (if: always()): {aggregates}"
    aggregate = jobs[aggregates[0]]
    needs = aggregate.get("needs", [])
    needs = [needs] if isinstance(needs, str) else needs
    assert set(needs) == set(jobs) - {aggregates[0]}, f"{aggregates[0]} needs {needs}"
    # It must fail unless each needed job succeeded: it reads the results of all of them.
    step_text = json.dumps(_steps(aggregate))
    assert "needs" in step_text, step_text
    assert "success" in step_text, step_text


# -- gpu.yml -------------------------------------------------------------------------------------


def test_gpu_jobs_run_only_on_the_self_hosted_gpu_runner() -> None:
    for job_id, job in _jobs(_load("gpu.yml")).items():
        assert job.get("runs-on") == GPU_RUNNER, f"{job_id}: runs-on {job.get('runs-on')!r}"


@pytest.mark.parametrize(("name", "label"), [("gpu.yml", "gpu"), ("benchmarks.yml", "benchmarks")])
def test_pull_requests_run_only_on_a_maintainers_label(name: str, label: str) -> None:
    problems = _label_gate_problems(_load(name), label)
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_the_label_gate_check_rejects_an_ungated_job() -> None:
    workflow = {
        "on": {"pull_request": {"types": ["labeled", "synchronize"]}, "push": {}},
        "jobs": {"x": {"if": "github.event_name == 'push' || github.event.label.name != ''"}},
    }
    problems = _label_gate_problems(workflow, "gpu")
    assert any("types" in problem for problem in problems)
    assert any("labelled 'not-gpu'" in problem for problem in problems)


def test_gpu_runs_on_main_nightly_by_hand_and_pull_requests_through_an_environment() -> None:
    workflow = _load("gpu.yml")
    triggers = _triggers(workflow)
    assert "main" in triggers.get("push", {}).get("branches", [])
    assert triggers.get("schedule"), "no nightly schedule"
    assert "workflow_dispatch" in triggers
    for job_id, job in _jobs(workflow).items():
        assert "gpu-pull-request" in str(job.get("environment")), f"{job_id}: no environment"


def test_gpu_floors_and_data_cache_are_configurable() -> None:
    workflow = _load("gpu.yml")
    inputs = _triggers(workflow)["workflow_dispatch"].get("inputs", {})
    tox_ini = (ROOT / "tox.ini").read_text(encoding="utf-8")
    for variable, name in (("MIN_ACCURACY", "min_accuracy"), ("MIN_AUC", "min_auc")):
        tox_default = re.search(rf"\{{env:PCAM_FULLCHECK_{variable}:([0-9.]+)\}}", tox_ini)
        assert tox_default, f"tox.ini does not read PCAM_FULLCHECK_{variable}"
        assert inputs.get(name, {}).get("default") == tox_default.group(1), name
        for job_id, job in _jobs(workflow).items():
            value = str(job.get("env", {}).get(f"PCAM_FULLCHECK_{variable}", ""))
            assert f"inputs.{name}" in value, f"{job_id}: PCAM_FULLCHECK_{variable}={value!r}"
            assert f"'{tox_default.group(1)}'" in value, f"{job_id}: no default in {value!r}"
    for job_id, job in _jobs(workflow).items():
        data_dir = str(job.get("env", {}).get("PCAM_DATA_DIR", ""))
        assert "vars.PCAM_CACHE_DIR" in data_dir, f"{job_id}: PCAM_DATA_DIR={data_dir!r}"


def test_gpu_fails_fast_without_a_gpu_then_runs_tox_gpu() -> None:
    for job_id, job in _jobs(_load("gpu.yml")).items():
        runs = [str(step.get("run", "")) for step in _steps(job)]
        tox_gpu = [
            i
            for i, run in enumerate(runs)
            if ("env", "gpu") in _tox_calls(run) and "tox exec" not in run
        ]
        assert tox_gpu, f"{job_id}: never runs tox -e gpu"
        checks = [i for i, run in enumerate(runs) if "nvidia-smi" in run]
        checks += [i for i, run in enumerate(runs) if "list_physical_devices('GPU')" in run]
        assert checks, f"{job_id}: no GPU check"
        assert max(checks) < tox_gpu[0], f"{job_id}: the GPU checks come after tox -e gpu"
    assert "--require-gpu" in (ROOT / "tox.ini").read_text(encoding="utf-8")


def _upload_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's ``actions/upload-artifact`` steps."""
    return [
        step
        for step in _steps(job)
        if str(step.get("uses", "")).startswith("actions/upload-artifact@")
    ]


def test_gpu_uploads_its_outputs_whatever_the_result() -> None:
    for job_id, job in _jobs(_load("gpu.yml")).items():
        uploads = _upload_steps(job)
        assert uploads, f"{job_id}: no upload-artifact step"
        assert all("always()" in str(step.get("if", "")) for step in uploads), job_id
        paths = "\n".join(str((step.get("with") or {}).get("path", "")) for step in uploads)
        for output in ("fullcheck.json", "report", "explain", "benchmarks.json"):
            assert output in paths, f"{job_id}: {output} is not uploaded"


def test_gpu_keeps_each_commits_check_on_the_runner_and_prunes_old_ones() -> None:
    """A job that dies resumes: the output is per commit, outside the job's temp directory."""
    for job_id, job in _jobs(_load("gpu.yml")).items():
        env = job.get("env", {})
        out, root = str(env.get("PCAM_FULLCHECK_OUT", "")), str(env.get("PCAM_FULLCHECK_ROOT", ""))
        assert "github.sha" in out, f"{job_id}: the output is not keyed by commit: {out!r}"
        assert "runner.temp" not in out, f"{job_id}: {out!r}"
        assert "RUNNER_TEMP" not in out, f"{job_id}: {out!r}"
        assert out.startswith(root.split("}}")[0]), f"{job_id}: {out!r} is not under {root!r}"
        runs = [str(step.get("run", "")) for step in _steps(job)]
        tox_gpu = next(
            i
            for i, run in enumerate(runs)
            if ("env", "gpu") in _tox_calls(run) and "tox exec" not in run
        )
        prune = [i for i, run in enumerate(runs) if "tools/prune_fullchecks.py" in run]
        assert prune, f"{job_id}: no pruning step"
        assert prune[0] < tox_gpu, f"{job_id}: the pruning comes after the check"
        assert '--keep "$GITHUB_SHA"' in runs[prune[0]], f"{job_id}: this commit is not kept"
        assert "--overwrite" in runs[tox_gpu], job_id
        assert "fullcheck.json" in runs[tox_gpu], job_id
        assert all("PCAM_FULLCHECK_OUT" not in str(step.get("env", {})) for step in _steps(job))
        for step in _upload_steps(job):
            paths = str((step.get("with") or {}).get("path", ""))
            assert "runner.temp" not in paths, f"{job_id}: uploads from the temp directory"
            assert paths.count("env.PCAM_FULLCHECK_OUT") >= 4, f"{job_id}: {paths!r}"
    assert (ROOT / "tools" / "prune_fullchecks.py").is_file()


# -- benchmarks.yml ------------------------------------------------------------------------------


def test_benchmarks_compare_base_and_head_in_one_job() -> None:
    workflow = _load("benchmarks.yml")
    triggers = _triggers(workflow)
    assert "schedule" in triggers
    assert "pull_request" in triggers
    for job_id, job in _jobs(workflow).items():
        assert "strategy" not in job, f"{job_id}: base and head must share one runner"
        runs = _scripts(job)
        bench = [run for run in runs if ("env", "bench") in _tox_calls(run)]
        assert len(bench) >= 2, f"{job_id}: tox -e bench runs {len(bench)} times, not twice"
        save = [i for i, run in enumerate(bench) if "--benchmark-save" in run]
        compare = [
            i
            for i, run in enumerate(bench)
            if "--benchmark-compare" in run and "--benchmark-compare-fail" in run
        ]
        assert save, f"{job_id}: no tox -e bench run with --benchmark-save"
        assert compare, f"{job_id}: no tox -e bench run with --benchmark-compare(-fail)"
        assert save[0] < compare[0], f"{job_id}: the compare runs before the save"
        assert "git worktree add" in bench[save[0]], f"{job_id}: the base is not a worktree"
        assert all("--benchmark-storage" in bench[i] for i in (save[0], compare[0]))


# -- mutation.yml --------------------------------------------------------------------------------


def test_mutation_runs_weekly_and_by_hand_only() -> None:
    workflow = _load("mutation.yml")
    triggers = _triggers(workflow)
    assert set(triggers) == {"schedule", "workflow_dispatch"}, sorted(triggers)
    assert triggers["schedule"], "no weekly schedule"
    _, _, ci_envs = _tox_config()
    assert "mutation" not in ci_envs, "tox -e mutation must not be labelled ci"
    tox_ini = (ROOT / "tox.ini").read_text(encoding="utf-8")
    env_list = re.search(r"^env_list\s*=(.*)$", tox_ini, re.MULTILINE)
    assert env_list, "tox.ini has no env_list"
    assert "mutation" not in env_list.group(1), "tox -e mutation must not run by default"
    for job_id, job in _jobs(workflow).items():
        assert any(("env", "mutation") in _tox_calls(s) for s in _scripts(job)), job_id
        uploads = _upload_steps(job)
        assert uploads, f"{job_id}: the summary is not uploaded"
        assert all("always()" in str(step.get("if", "")) for step in uploads), job_id
        assert "mutation-summary.json" in json.dumps(uploads), job_id


# -- thorough.yml ---------------------------------------------------------------------------------


def test_thorough_runs_the_property_tests_weekly_under_the_thorough_profile() -> None:
    workflow = _load("thorough.yml")
    triggers = _triggers(workflow)
    assert set(triggers) == {"schedule", "workflow_dispatch"}, sorted(triggers)
    assert triggers["schedule"], "no weekly schedule"
    [job] = _jobs(workflow).values()
    assert job["env"]["HYPOTHESIS_PROFILE"] == "thorough"
    assert any(("env", "fast") in _tox_calls(script) for script in _scripts(job))


def test_ci_runs_the_fast_tier_as_its_own_job_and_summarises_the_durations() -> None:
    jobs = _jobs(_load("ci.yml"))
    fast = [
        job_id
        for job_id, job in jobs.items()
        if any(("env", "fast") in _tox_calls(script) for script in _scripts(job))
    ]
    assert fast == ["fast"]
    assert "needs" not in jobs["fast"], "the fast tier waits for nothing"
    for job_id in ("fast", "tests"):
        scripts = " ".join(_scripts(jobs[job_id]))
        assert "--durations=" in scripts, job_id
        assert "tools/durations_summary.py" in scripts, job_id
        assert "GITHUB_STEP_SUMMARY" in scripts, job_id
