"""``image``: the operator image, built once per session by tools/image.sh (cached builds take seconds).

The image lives in tools/image.sh's private podman store; ``Image.podman`` reaches it. The tests need root
(rootful podman) and skip without it. A cold build (base image, syft from its Go module) takes minutes:
`make image` ahead of the tests does it once per machine.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.image.image import BUILD_TIMEOUT, IMAGE_SH, Image


@pytest.fixture(scope="session")
def image() -> Image:
    if os.geteuid() != 0:
        pytest.skip("tools/image.sh runs rootful podman: the image tests need root")
    try:
        proc = subprocess.run(
            ["bash", str(IMAGE_SH)], capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"tools/image.sh took more than {BUILD_TIMEOUT}s:\n{exc.stderr!s}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"tools/image.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    info = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    summary = {k: info.get(k) for k in ("image_id", "size_bytes", "layers", "base_seconds", "build_seconds")}
    print(f"\n[image] {info.get('image')} {summary}; SBOMs in {info.get('sbom_dir')}")
    return Image(info)
