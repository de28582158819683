"""The GitHub Actions workflows in .github/workflows: actionlint finds nothing in them, every third-party action
is pinned to a full commit SHA, every token has the least privilege its job needs, and what the workflows run
agrees with the Makefile, .ci/run and the pinned helm.

actionlint is built from its Go module by tools/go-tool.sh (pinned in tools/go-tools.txt; ``make test-tools``
builds it ahead of the tests). It runs shellcheck on every ``run:`` script when ``shellcheck`` is on PATH,
and skips that check silently otherwise; the failure message says which it was.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import versions
from tests.support import ROOT
from tests.support.tools import go_tool

WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml")) + sorted(WORKFLOWS_DIR.glob("*.yaml"))
CI = WORKFLOWS_DIR / "ci.yml"
RELEASE = WORKFLOWS_DIR / "release.yml"

# `uses: owner/repo[/path]@<40 hex> # vX.Y.Z`
PINNED = re.compile(
    r"^\s*(?:-\s+)?uses:\s+(?P<action>[\w.-]+/[\w.-]+(?:/[\w./-]+)?)@(?P<sha>[0-9a-f]{40})\s+#\s+v\d+\.\d+\.\d+\s*$"
)
USES = re.compile(r"^\s*(?:-\s+)?uses:\s+(?P<ref>\S+)")


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict), on
    return on


def steps(workflow: dict[Any, Any], job: str) -> list[dict[str, Any]]:
    return list(workflow["jobs"][job]["steps"])


def run_scripts(workflow: dict[Any, Any], job: str) -> str:
    return "\n".join(str(s["run"]) for s in steps(workflow, job) if "run" in s)


def uses(workflow: dict[Any, Any], job: str) -> list[str]:
    return [str(s["uses"]).split("@", 1)[0] for s in steps(workflow, job) if "uses" in s]


def actionlint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(go_tool("actionlint")), "-no-color", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_there_are_the_two_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml"}


# ------------------------------------------------------------------------------------------ actionlint


def test_actionlint_finds_nothing() -> None:
    proc = actionlint(*(str(p) for p in WORKFLOWS))
    shellcheck = shutil.which("shellcheck")
    where = (
        f"shellcheck {shellcheck}" if shellcheck else "no shellcheck on PATH: run scripts were not checked"
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), (
        f"actionlint ({where}):\n{proc.stdout}{proc.stderr}"
    )


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """The check above would pass vacuously if actionlint ignored the files: a broken one is reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_context_key }}\n"
        "        shell: bash\n"
        "      - uses: actions/checkout@v4\n"
        "        with:\n"
        "          no-such-input: x\n"
    )
    proc = actionlint(str(broken))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no_such_context_key" in proc.stdout, proc.stdout
    assert "no-such-input" in proc.stdout, proc.stdout


# ------------------------------------------------------------------------------------------ pins


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_third_party_action_is_pinned_to_a_commit_sha(path: Path) -> None:
    """`uses: owner/repo@<full SHA> # vX.Y.Z`: a tag can be moved, a commit SHA cannot; the comment says
    which release it is (and lets Dependabot/Renovate update both)."""
    bad = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = USES.match(line)
        if m and not m.group("ref").startswith("./") and not PINNED.match(line):
            bad.append(f"{path.name}:{n}: {line.strip()}")
    assert not bad, "not pinned to a full commit SHA with a version comment:\n" + "\n".join(bad)


def test_one_action_one_pin_across_workflows() -> None:
    pins: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            m = PINNED.match(line)
            if m:
                pins.setdefault(m.group("action").lower(), set()).add(line.split("@", 1)[1].strip())
    assert pins, "no pinned action found"
    assert {a: p for a, p in pins.items() if len(p) > 1} == {}


def test_no_expression_is_spliced_into_a_run_script() -> None:
    """``${{ }}`` in a ``run:`` is pasted into the shell before it runs (script injection from tag names,
    branch names, PR titles); the workflows pass such values through ``env:`` instead."""
    for path in WORKFLOWS:
        for name, job in load(path)["jobs"].items():
            for step in job["steps"]:
                assert "${{" not in str(step.get("run", "")), f"{path.name} job {name}: {step.get('name')}"


# ------------------------------------------------------------------------------------------ permissions


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_workflow_token_can_only_read(path: Path) -> None:
    assert load(path)["permissions"] == {"contents": "read"}


def test_ci_jobs_get_no_more_than_read() -> None:
    for name, job in load(CI)["jobs"].items():
        assert "permissions" not in job, f"ci.yml job {name} widens the token"


def test_release_jobs_get_only_what_they_use() -> None:
    jobs = load(RELEASE)["jobs"]
    push_and_sign = {"contents": "read", "packages": "write", "id-token": "write"}
    assert {name: job.get("permissions") for name, job in jobs.items()} == {
        "image": push_and_sign,
        "chart": push_and_sign,
        "release": {"contents": "write"},
    }
    # And each write is used: packages by a registry login, id-token by cosign, contents by the release.
    for name, job in jobs.items():
        scripts = run_scripts(load(RELEASE), name)
        if job["permissions"].get("packages") == "write":
            assert "docker/login-action" in uses(load(RELEASE), name)
        if job["permissions"].get("id-token") == "write":
            assert "cosign sign --yes" in scripts
        if job["permissions"].get("contents") == "write":
            assert "gh release create" in scripts


# ------------------------------------------------------------------------------------------ release.yml


def test_release_runs_on_version_tags_only() -> None:
    assert triggers(load(RELEASE)) == {"push": {"tags": ["v*"]}}


def test_release_builds_both_architectures_and_pushes_by_digest() -> None:
    wf = load(RELEASE)
    build = next(s for s in steps(wf, "image") if s.get("id") == "build")
    assert str(build["uses"]).startswith("docker/build-push-action@")
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["push"] is True
    assert "docker/setup-qemu-action" in uses(wf, "image")
    assert "docker/setup-buildx-action" in uses(wf, "image")
    assert wf["jobs"]["image"]["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    scripts = run_scripts(wf, "image")
    assert 'cosign sign --yes "$IMAGE@$DIGEST"' in scripts
    assert "--type spdxjson" in scripts and "--type cyclonedx" in scripts
    formats = [
        s["with"]["format"] for s in steps(wf, "image") if str(s.get("uses", "")).startswith("anchore/")
    ]
    assert sorted(formats) == ["cyclonedx-json", "spdx-json"]


def test_release_uses_the_helm_the_tests_use() -> None:
    wf = load(RELEASE)
    assert wf["env"]["HELM_VERSION"] == versions.HELM
    setup = next(s for s in steps(wf, "chart") if str(s.get("uses", "")).startswith("azure/setup-helm@"))
    assert setup["with"]["version"] == "${{ env.HELM_VERSION }}"


def test_release_attaches_the_chart_and_the_sboms() -> None:
    wf = load(RELEASE)
    uploads = {
        s["with"]["name"]: s["with"]["path"]
        for s in steps(wf, "image") + steps(wf, "chart")
        if "upload-artifact" in str(s.get("uses", ""))
    }
    assert uploads == {"sbom": "sbom/", "chart": "dist/"}
    assert wf["jobs"]["release"]["needs"] == ["image", "chart"]
    assert 'gh release create "$GITHUB_REF_NAME" assets/*' in run_scripts(wf, "release")


# ------------------------------------------------------------------------------------------ ci.yml


def make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target's recipe."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().lstrip("@"))
    assert recipe, target
    return recipe


def test_ci_runs_what_make_lint_runs() -> None:
    """The static job splits `make lint` into named steps: the same commands, none dropped."""
    scripts = run_scripts(load(CI), "static")
    missing = [cmd for cmd in make_recipe("lint") if cmd not in scripts.splitlines()]
    assert not missing, f"ci.yml's static job does not run: {missing}"
    assert "make verify" in scripts.splitlines()


def test_ci_runs_make_test_as_ci_run_does() -> None:
    wf = load(CI)
    assert "make test" in run_scripts(wf, "test").splitlines()
    exported = dict(re.findall(r"(WIDEEP_REQUIRE_\w+)=(\S+)", (ROOT / ".ci" / "run").read_text()))
    env = wf["jobs"]["test"]["env"]
    assert exported and {k: env.get(k) for k in exported} == exported
    assert {"actions/setup-go", "actions/setup-python", "actions/cache"} <= set(uses(wf, "test"))
    assert tuple(int(x) for x in str(wf["env"]["GO_VERSION"]).split(".")[:2]) >= (1, 26)


def test_ci_cache_is_keyed_by_every_pin_file() -> None:
    cache = next(s for s in steps(load(CI), "test") if str(s.get("uses", "")).startswith("actions/cache@"))
    assert "~/.cache/wideep" in cache["with"]["path"].splitlines()
    key = cache["with"]["key"]
    for pins in ("pyproject.toml", "tools/constraints.txt", "tools/go-tools.txt", "devcluster/versions.py"):
        assert f"'{pins}'" in key, pins


def test_ci_builds_the_platforms_the_release_pushes() -> None:
    def platforms(path: Path, job: str) -> set[str]:
        return {
            s["with"]["platforms"]
            for s in steps(load(path), job)
            if str(s.get("uses", "")).startswith("docker/build-push-action@")
        }

    assert platforms(RELEASE, "image") <= platforms(CI, "image")
