"""The Helm chart charts/wideep-operator: ``helm`` (the binary ``make cluster-build`` caches), ``render``
(``helm template``), and ``argocd_health``, its Argo CD health check run by a real Lua 5.1 interpreter."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from devcluster.cluster import find_controlplane
from tests.support import ROOT

CHART = ROOT / "charts" / "wideep-operator"
HEALTH_LUA = CHART / "argocd" / "health.lua"


def helm_binary() -> Path:
    cp = find_controlplane()
    if cp is None or not (cp / "bin" / "helm").is_file():
        pytest.fail("helm is not built: run `make cluster-build` first", pytrace=False)
    return cp / "bin" / "helm"


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    home = Path(os.environ.get("WIDEEP_STATE_DIR", ROOT / ".local")) / "helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run(
        [str(helm_binary()), *args], check=False, capture_output=True, text=True, env=env, timeout=180
    )
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def render(*sets: str, namespace: str = "wideep-system", release: str = "wideep") -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``--set`` values: its documents."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """Run health.lua on ``obj`` the way Argo CD does; returns {"status": ..., "message": ...}."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    assert lua.eval("_VERSION") == "Lua 5.1"
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(HEALTH_LUA.read_text())
    assert result is not None, "health.lua returned nothing"
    out = dict(result.items())
    assert set(out) == {"status", "message"}, out
    assert out["status"] in {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
    return {k: str(v) for k, v in out.items()}
