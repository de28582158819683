"""Go-built tools the tests use (tools/go-tools.txt), built once per machine by tools/go-tool.sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import ROOT

TOOLS_LIST = ROOT / "tools" / "go-tools.txt"


def tool_specs() -> dict[str, tuple[str, str]]:
    """NAME -> (PACKAGE, VERSION), from tools/go-tools.txt."""
    out: dict[str, tuple[str, str]] = {}
    for raw in TOOLS_LIST.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, pkg, version = line.split()
            out[name] = (pkg, version)
    return out


def go_tool(name: str) -> Path:
    """The path of tool ``name``, built first if this machine has not built it yet (`make test-tools` does
    it ahead of the tests)."""
    pkg, version = tool_specs()[name]
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "go-tool.sh"), name, pkg, version],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building {name} {version} failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip())
