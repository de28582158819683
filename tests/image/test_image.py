"""The operator image as built: its config, what Python it holds (pinned, no installer) and its SBOMs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.image.image import BUILD_TIMEOUT, Image
from tests.support import ROOT

# the first test builds the image (the session fixture): minutes when nothing is cached yet
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 300)

CONSTRAINTS = ROOT / "tools" / "constraints.txt"
INSTALLERS = ("pip", "setuptools", "wheel")
# Every distribution the image's Python interpreters see: the operator's virtualenv (the entrypoint's) and
# the base's own interpreter. Exec form everywhere: no shell is involved.
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json, sys; "
    "print(json.dumps({'prefix': sys.prefix, 'dists': sorted([d.metadata['Name'], d.version] "
    "for d in m.distributions())}))"
)
INTERPRETERS = ("/opt/wideep/bin/python", "/usr/bin/python3")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"tools/constraints.txt: {line!r} is not an exact pin"
            pins[canonical(name)] = version.strip()
    return pins


def run(image: Image, *args: str, entrypoint: str | None = None, extra: tuple[str, ...] = ()) -> str:
    """``podman run --rm`` of the image (no network, read-only root), its stdout."""
    cmd = ["run", "--rm", "--network", "none", "--read-only", *extra]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    return image.podman(*cmd, image.ref, *args, check=True).stdout


def pypi_packages(image: Image) -> dict[str, dict[str, str]]:
    """SBOM format -> {canonical name: version} of its pkg:pypi packages."""
    out: dict[str, dict[str, str]] = {}
    purls = {
        "cyclonedx": [c.get("purl", "") for c in image.sbom("cyclonedx")["components"]],
        "spdx": [
            ref["referenceLocator"]
            for p in image.sbom("spdx")["packages"]
            for ref in p.get("externalRefs", [])
            if ref.get("referenceType") == "purl"
        ],
    }
    for kind, refs in purls.items():
        found: dict[str, str] = {}
        for purl in refs:
            m = re.fullmatch(r"pkg:pypi/([^@?#]+)@([^?#]+)(?:[?#].*)?", purl)
            if m:
                found[canonical(unquote(m.group(1)))] = unquote(m.group(2))
        out[kind] = found
    return out


# ------------------------------------------------------------------------------------------ config


def test_config_runs_wideep_as_a_numeric_non_root_user(image: Image) -> None:
    config = image.config["Config"]
    assert re.fullmatch(r"65532(:65532)?", config["User"]), config["User"]
    # exec form: the runtime starts wideep itself, no /bin/sh -c in between
    assert config["Entrypoint"] == ["wideep"]
    assert config["Cmd"] == ["run"]
    tags = set(image.config["RepoTags"])
    assert {"localhost/wideep-operator:dev", f"localhost/wideep-operator:{image.version}"} <= tags


def test_wideep_version_runs_without_a_shell(image: Image, tmp_path: Path) -> None:
    # Every shell of the image replaced by an empty, non-executable file: starting one fails from then on.
    blank = tmp_path / "no-shell"
    blank.write_text("")
    blank.chmod(0o644)
    no_shell = tuple(arg for sh in ("/usr/bin/dash", "/usr/bin/bash") for arg in ("-v", f"{blank}:{sh}:ro"))
    refused = image.podman(
        "run", "--rm", "--network", "none", *no_shell, "--entrypoint", "/bin/sh", image.ref, "-c", "true"
    )
    assert refused.returncode != 0, "the shells were not replaced"
    pyproject_version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert pyproject_version
    assert image.version == pyproject_version.group(1)
    out = run(image, "--version", extra=("--user", "65532", *no_shell))
    assert out.strip() == f"wideep {image.version}"


def test_no_installer_in_the_image(image: Image) -> None:
    probe = (
        f"import importlib.util as u, json; print(json.dumps([n for n in {INSTALLERS!r} if u.find_spec(n)]))"
    )
    for python in INTERPRETERS:
        assert json.loads(run(image, "-c", probe, entrypoint=python)) == [], python
    path_dirs = [
        "/opt/wideep/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    listing = (
        f"import os, json; print(json.dumps({{d: os.listdir(d) for d in {path_dirs!r} if os.path.isdir(d)}}))"
    )
    executables = json.loads(run(image, "-c", listing, entrypoint="python"))
    found = [f"{d}/{n}" for d, names in executables.items() for n in names if n.startswith(INSTALLERS)]
    assert not found, f"installers on PATH: {found}"
    for kind, packages in pypi_packages(image).items():
        assert not set(INSTALLERS) & set(packages), (
            f"{kind} SBOM lists {sorted(set(INSTALLERS) & set(packages))}"
        )


# ------------------------------------------------------------------------------------------ pins


def test_every_python_distribution_is_pinned_by_the_constraints(image: Image) -> None:
    pins = constraints()
    seen: dict[str, str] = {}
    for python in INTERPRETERS:
        listing = json.loads(run(image, "-c", LIST_DISTRIBUTIONS, entrypoint=python))
        for name, version in listing["dists"]:
            seen[canonical(name)] = version
    assert seen.pop("wideep") == image.version
    assert "kopf" in seen, "the operator's dependencies are installed"
    unpinned = {n: v for n, v in seen.items() if pins.get(n) != v}
    assert not unpinned, (
        "distributions in the image that tools/constraints.txt does not pin at that version: "
        + ", ".join(f"{n}=={v} (pinned: {pins.get(n, 'no')})" for n, v in sorted(unpinned.items()))
    )
    # the SBOMs see exactly the same Python packages as the interpreters do
    for kind, packages in pypi_packages(image).items():
        assert packages.pop("wideep", None) == image.version, kind
        assert packages == seen, f"{kind} SBOM and importlib.metadata disagree"


# ------------------------------------------------------------------------------------------ SBOMs


def test_sboms_describe_the_image(image: Image) -> None:
    spdx = image.sbom("spdx")
    assert spdx["spdxVersion"].startswith("SPDX-2.")
    cyclonedx = image.sbom("cyclonedx")
    assert cyclonedx["bomFormat"] == "CycloneDX"
    assert cyclonedx["metadata"]["component"]["name"] == "wideep-operator"
    assert cyclonedx["metadata"]["component"]["version"] == image.version
    debs = {c["name"] for c in cyclonedx["components"] if c.get("purl", "").startswith("pkg:deb/")}
    assert {"python3.11", "libc6", "ca-certificates"} <= debs, "the base's Debian packages are listed"
    spdx_names = {p["name"] for p in spdx["packages"]}
    assert {"wideep", "kopf", "python3.11"} <= spdx_names
    print(
        f"\nSBOM packages: SPDX {len(spdx['packages'])}, CycloneDX "
        f"{sum(1 for c in cyclonedx['components'] if c['type'] != 'file')} (+ files)"
    )
