"""The chart packaged the way the release workflow packages it pins the operator image by digest.

The release workflow's job "chart" runs .github/scripts/package-chart.sh, which writes image.digest (and
image.repository) into a copy of the chart's values.yaml and runs `helm package` on it. These tests run the
workflow's own step scripts (the ``run:`` text of release.yml, with the env it gives them) in a scratch
folder that holds the repository's .github/ and charts/, then `helm template` the packaged .tgz: the
operator Deployment's image is ``ghcr.io/wideep/wideep-operator@sha256:<digest>``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT
from tests.support.chart import CHART, helm, helm_binary

RELEASE = ROOT / ".github" / "workflows" / "release.yml"
SCRIPT = ROOT / ".github" / "scripts" / "package-chart.sh"
DIGEST = "sha256:" + hashlib.sha256(b"wideep-operator release test").hexdigest()
REPOSITORY = "ghcr.io/wideep/wideep-operator"


def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(RELEASE.read_text())
    assert isinstance(data, dict)
    return data


def step(job: str, step_id: str) -> dict[str, Any]:
    found = [s for s in workflow()["jobs"][job]["steps"] if s.get("id") == step_id]
    assert len(found) == 1, f"release.yml job {job}: no single step with id {step_id}"
    return dict(found[0])


def chart_meta() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert isinstance(data, dict)
    return data


def helm_env() -> dict[str, str]:
    """The environment tests.support.chart.helm gives helm (its homes under the state dir), plus HELM."""
    home = Path(os.environ.get("WIDEEP_STATE_DIR", ROOT / ".local")) / "helm-home"
    return {
        "HELM": str(helm_binary()),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def workspace(tmp_path: Path) -> Path:
    """A scratch checkout: what the release steps read (.github/, charts/, pyproject.toml), nothing written
    into the real one."""
    ws = tmp_path / "workspace"
    ws.mkdir(parents=True)
    for name in (".github", "charts", "pyproject.toml"):
        (ws / name).symlink_to(ROOT / name)
    return ws


def run_step(
    job: str, step_id: str, cwd: Path, given: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run a release.yml step's ``run:`` script like the runner does (bash -e -o pipefail, the workflow's
    env, then the step's env): each ``${{ }}`` value of the step's env must be in ``given``. Returns the
    process and what the step wrote to $GITHUB_OUTPUT."""
    s = step(job, step_id)
    env = {**os.environ, **{k: str(v) for k, v in workflow()["env"].items()}}
    for key, value in (s.get("env") or {}).items():
        if "${{" in str(value):
            assert key in given, f"step {step_id}: the test gives no value for {key} ({value})"
        else:
            env[key] = str(value)
    env.update(given)
    output = cwd / "github_output"
    output.write_text("")
    env["GITHUB_OUTPUT"] = str(output)
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", s["run"]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return proc, outputs


def package(tmp_path: Path, repository: str = REPOSITORY, digest: str = DIGEST) -> Path:
    """The release's "package" step, as release.yml runs it."""
    proc, outputs = run_step(
        "chart", "package", workspace(tmp_path), {"IMAGE": repository, "DIGEST": digest, **helm_env()}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tgz = Path(outputs["tgz"])
    assert tgz.is_file(), outputs
    return tgz


def operator_image(tgz: Path, *sets: str) -> str:
    args = ["template", "wideep", str(tgz), "--namespace", "wideep-system"]
    for s in sets:
        args += ["--set", s]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deployments) == 1
    (container,) = deployments[0]["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def test_the_release_packages_the_chart_with_the_script() -> None:
    s = step("chart", "package")
    assert ".github/scripts/package-chart.sh" in s["run"]
    assert s["env"] == {
        "IMAGE": "${{ needs.image.outputs.image }}",
        "DIGEST": "${{ needs.image.outputs.digest }}",
    }
    assert workflow()["env"]["CHART_DIR"] == CHART.relative_to(ROOT).as_posix()


def test_packaged_chart_renders_the_image_pinned_by_digest(tmp_path: Path) -> None:
    tgz = package(tmp_path)
    meta = chart_meta()
    assert tgz.name == f"{meta['name']}-{meta['version']}.tgz"
    assert operator_image(tgz) == f"{REPOSITORY}@{DIGEST}"
    # The digest wins over a tag given at install time; the source chart still renders the tag.
    assert operator_image(tgz, "image.tag=9.9.9") == f"{REPOSITORY}@{DIGEST}"
    assert operator_image(CHART) == f"{REPOSITORY}:{meta['appVersion']}"


def test_only_the_two_image_values_change(tmp_path: Path) -> None:
    tgz = package(tmp_path)
    with tarfile.open(tgz) as tar:
        member = tar.extractfile(f"{chart_meta()['name']}/values.yaml")
        assert member is not None
        packaged = member.read().decode()
    source = (CHART / "values.yaml").read_text()
    changed = [(a, b) for a, b in zip(source.splitlines(), packaged.splitlines(), strict=True) if a != b]
    assert changed == [('  digest: ""', f'  digest: "{DIGEST}"')]
    values = yaml.safe_load(packaged)
    assert values["image"]["digest"] == DIGEST
    assert values["image"]["repository"] == REPOSITORY
    # The checkout's own chart is untouched.
    assert yaml.safe_load(source)["image"]["digest"] == ""


def test_a_fork_publishes_under_its_own_owner(tmp_path: Path) -> None:
    """The "names" step names the image ghcr.io/<owner, lowercased>/wideep-operator: for the wideep owner that
    is the chart's default repository; a fork's packaged chart points at the fork's image."""
    meta = chart_meta()
    ws = workspace(tmp_path)
    proc, outputs = run_step(
        "image", "names", ws, {"GITHUB_REF_NAME": f"v{meta['version']}", "GITHUB_REPOSITORY_OWNER": "WideEP"}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outputs == {"version": meta["version"], "image": REPOSITORY}
    assert yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"] == REPOSITORY

    _, fork = run_step(
        "image",
        "names",
        ws,
        {"GITHUB_REF_NAME": f"v{meta['version']}", "GITHUB_REPOSITORY_OWNER": "Some-Fork"},
    )
    tgz = package(tmp_path / "fork", repository=fork["image"])
    assert operator_image(tgz) == f"ghcr.io/some-fork/wideep-operator@{DIGEST}"


def test_a_tag_that_is_not_the_version_is_refused(tmp_path: Path) -> None:
    proc, outputs = run_step(
        "image",
        "names",
        workspace(tmp_path),
        {"GITHUB_REF_NAME": "v99.0.0", "GITHUB_REPOSITORY_OWNER": "wideep"},
    )
    assert proc.returncode != 0 and outputs == {}
    assert "::error::tag v99.0.0" in proc.stdout


@pytest.mark.parametrize(
    ("repository", "digest", "why"),
    [
        (REPOSITORY, "sha256:abc", "digest must be sha256:<64 lowercase hex>"),
        (REPOSITORY, DIGEST.upper(), "digest must be sha256:<64 lowercase hex>"),
        (REPOSITORY, "", "digest must be sha256:<64 lowercase hex>"),
        (f"{REPOSITORY}:0.1.0", DIGEST, "is not an image repository"),
        (f"{REPOSITORY}@{DIGEST}", DIGEST, "is not an image repository"),
        ("GHCR.io/WideEP/wideep-operator", DIGEST, "is not an image repository"),
    ],
)
def test_the_script_refuses_a_bad_reference(tmp_path: Path, repository: str, digest: str, why: str) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(CHART), repository, digest, str(tmp_path / "dist")],
        env={**os.environ, **helm_env()},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert why in proc.stderr
    assert not (tmp_path / "dist").exists()
