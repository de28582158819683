"""``Image``: the operator image that tools/image.sh built, and podman against its private store."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tests.support import ROOT

IMAGE_SH = ROOT / "tools" / "image.sh"
BUILD_TIMEOUT = 1800
"""seconds: a cold build (the base image, syft from its Go module) takes minutes"""


@dataclass(frozen=True)
class Image:
    """What tools/image.sh printed (its KEY=VALUE lines), and podman against its private store."""

    info: dict[str, str]

    @property
    def ref(self) -> str:
        return self.info["image"]

    @property
    def version(self) -> str:
        return self.info["version"]

    def podman(
        self, *args: str, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", str(IMAGE_SH), "podman", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, f"podman {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    @cached_property
    def config(self) -> dict[str, Any]:
        """``podman image inspect``'s document of the image."""
        out = json.loads(self.podman("image", "inspect", self.ref, check=True).stdout)
        assert isinstance(out, list) and len(out) == 1
        doc: dict[str, Any] = out[0]
        return doc

    def sbom(self, kind: str) -> dict[str, Any]:
        """The SPDX (``spdx``) or CycloneDX (``cyclonedx``) JSON SBOM that tools/image.sh wrote."""
        doc: dict[str, Any] = json.loads(Path(self.info[f"sbom_{kind}"]).read_text())
        return doc
