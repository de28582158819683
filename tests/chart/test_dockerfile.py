"""The Dockerfile, without a Docker engine: a static check, and its install step run for real.

The builder stage installs the operator with ``tools/docker-install.sh`` (wheel built from the source,
dependencies pinned by tools/constraints.txt, wheels only, into a virtualenv without pip). The test copies
exactly what the Dockerfile COPYs into a fresh folder, runs the same script the same way, and runs the
installed ``wideep`` like the image's ENTRYPOINT would.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "tools" / "constraints.txt"
EXAMPLE = ROOT / "examples" / "deepseek-v3-wide-ep.yaml"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions (keyword upper-cased, continuation lines joined, comments dropped)."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arg = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arg.strip(), re.IGNORECASE)
            assert m, f"cannot parse FROM {arg!r}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, arg.strip()))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())
FINAL = STAGES[-1]
BUILDER = STAGES[0]


# --------------------------------------------------------------------------------------------- static


def test_multi_stage_with_a_builder() -> None:
    assert len(STAGES) >= 2
    assert BUILDER.name, "the builder stage is named"
    copies_from_builder = [a for a in FINAL.all("COPY") if a.startswith(f"--from={BUILDER.name} ")]
    assert copies_from_builder, "the final stage takes the installed operator from the builder"


def test_every_base_image_is_pinned_and_never_latest() -> None:
    names = {s.name for s in STAGES if s.name}
    for stage in STAGES:
        if stage.base in names:
            continue
        assert "latest" not in stage.base
        assert "$" not in stage.base, "no ARG-controlled base image"
        repo, _, tag = stage.base.partition("@")[0].partition(":")
        assert repo == "python", stage.base
        pinned_tag = re.fullmatch(r"\d+\.\d+\.\d+-slim-[a-z]+", tag) is not None
        assert pinned_tag or "@sha256:" in stage.base, f"{stage.base}: pin an exact x.y.z tag or a digest"
        assert "slim" in tag


def test_final_stage_runs_wideep_as_a_numeric_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "the final stage sets USER"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert m, f"USER {users[-1]!r} is not numeric (kubelet can only check runAsNonRoot for a numeric user)"
    assert int(m.group(1)) != 0
    assert m.group(2) is None or int(m.group(2)) != 0
    assert FINAL.all("ENTRYPOINT") == ['["wideep"]']
    assert FINAL.all("CMD") == ['["run"]']
    chart_values = (ROOT / "charts" / "wideep-operator" / "values.yaml").read_text()
    assert f"runAsUser: {m.group(1)}" in chart_values, "the chart runs as the image's user"


def test_no_build_tools_or_installs_in_the_final_stage() -> None:
    runs = " ".join(FINAL.all("RUN"))
    for forbidden in (
        "apt-get install",
        "apk add",
        "gcc",
        "build-essential",
        "pip install",
        "pip wheel",
        "curl",
        "wget",
    ):
        assert forbidden not in runs, f"final stage: {forbidden}"
    assert "pip uninstall" in runs, "the final stage drops the base image's pip"
    assert not FINAL.all("ADD")


def test_builder_installs_with_the_shared_script_and_pinned_constraints() -> None:
    assert "sh tools/docker-install.sh /src /opt/wideep" in BUILDER.all("RUN")
    script = (ROOT / "tools" / "docker-install.sh").read_text()
    assert '-c "$constraints"' in script
    assert "--only-binary=:all:" in script


def _copy_sources(stage: Stage) -> list[str]:
    sources: list[str] = []
    for arg in stage.all("COPY"):
        if arg.startswith("--from="):
            continue
        parts = arg.split()
        sources += parts[:-1]
    return sources


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path, pat + "/*"):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_dockerfile_copies_and_drops_the_rest() -> None:
    patterns = [
        p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    for src in _copy_sources(BUILDER):
        assert (ROOT / src).exists(), src
        assert not _dockerignored(src.rstrip("/"), patterns), f"{src} is excluded by .dockerignore"
        if (ROOT / src).is_dir():
            assert not _dockerignored(f"{src.rstrip('/')}/wideep/cli.py", patterns)
    for private in (".git", ".local", "tests", "bench", "charts", "operator/wideep/__pycache__"):
        assert _dockerignored(private, patterns), f"{private} would be sent to the Docker daemon"


# --------------------------------------------------------------------------------------------- install


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage's RUN, on this machine: the sources the Dockerfile COPYs, then docker-install.sh."""
    src = tmp_path_factory.mktemp("src")
    for item in _copy_sources(BUILDER):
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(
                source, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            )
        else:
            (src / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / item)
    dest = tmp_path_factory.mktemp("image") / "opt-wideep"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    proc = subprocess.run(
        ["sh", str(src / "tools" / "docker-install.sh"), str(src), str(dest)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=540,
    )
    assert proc.returncode == 0, f"docker-install.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return dest


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KUBECONFIG")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["wideep", *args], check=False, capture_output=True, text=True, env=env, timeout=120, cwd="/"
    )


def test_installed_wideep_runs_from_the_image_layout(image_venv: Path) -> None:
    assert (image_venv / "bin" / "wideep").is_file()
    top = _run(image_venv, "--help")
    assert top.returncode == 0, top.stderr
    assert "validate" in top.stdout
    assert "run" in top.stdout
    run_help = _run(image_venv, "run", "--help")
    assert run_help.returncode == 0, run_help.stderr
    for flag in (
        "--namespace",
        "--all-namespaces",
        "--leader-elect",
        "--liveness-port",
        "--metrics-port",
        "--log-format",
    ):
        assert flag in run_help.stdout
    validate = _run(image_venv, "validate", "-f", str(EXAMPLE))
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "is valid" in validate.stderr
    version = _run(image_venv, "--version")
    assert version.stdout.strip() == "wideep 0.1.0"


def test_installed_code_is_the_wheel_not_the_checkout(image_venv: Path) -> None:
    proc = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", "import wideep, sys; print(wideep.__file__)"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
        check=True,
    )
    assert proc.stdout.strip().startswith(str(image_venv)), proc.stdout


def test_runtime_has_no_installer_and_only_pinned_dependencies(image_venv: Path) -> None:
    pip_there = subprocess.run(
        [str(image_venv / "bin" / "python"), "-m", "pip", "--version"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert pip_there.returncode != 0, "the runtime virtualenv has no pip"
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if version:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(image_venv / "bin" / "python"),
            "list",
            "--format=freeze",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = dict(line.split("==", 1) for line in listing.split() if "==" in line)
    assert installed.pop("wideep") == "0.1.0"
    for name in ("setuptools", "wheel", "pip"):
        assert name not in installed, f"{name} in the runtime virtualenv"
    assert {"kopf", "aiohttp", "pydantic", "PyYAML", "prometheus_client"} <= set(installed)
    for name, version in installed.items():
        key = re.sub(r"[-_.]+", "-", name).lower()
        assert pins.get(key) == version, f"{name}=={version} is not pinned in tools/constraints.txt"
