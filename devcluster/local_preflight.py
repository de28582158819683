"""A whole group's preflight on one machine, one process per rank pod: for the tests and the benches.

Each process gets exactly the environment the planner renders for that pod's preflight init
container (fieldRefs resolved: the pod IP is 127.0.0.1), plus PATH/PYTHONPATH to run, and dials
127.0.0.1 through ``--master-addr-override`` instead of rank 0's cluster DNS name. No torch here:
the processes import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wideep.api import constants as c
from wideep.api.validate import validate_object
from wideep.planning.planner import PREFLIGHT_CONTAINER, plan

OPERATOR_DIR = Path(__file__).resolve().parents[1] / "operator"
# Kept from the caller's environment: what a process needs to start, and the switches that keep
# NVLink multicast off on shared GPU hosts.
PASS_THROUGH = (
    "PATH",
    "HOME",
    "LANG",
    "NCCL_NVLS_ENABLE",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST",
    "NVSHMEM_DISABLE_NVLS",
)


def base_env() -> dict[str, str]:
    """The environment every spawned process starts from, before the pod's own variables."""
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(OPERATOR_DIR), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def torch_python() -> str | None:
    """A Python with torch: WIDEEP_TORCH_PYTHON, else the vLLM virtualenv ``tools/vllm-venv.sh`` built."""
    explicit = os.environ.get("WIDEEP_TORCH_PYTHON")
    if explicit:
        return explicit
    cache = os.environ.get("WIDEEP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wideep"
    )
    version = os.environ.get("VLLM_VERSION", "0.11.1")
    for venv in sorted(Path(cache, "venvs").glob(f"vllm-{version}-py3*")):
        if (venv / "COMPLETE").is_file() and (venv / "bin" / "python").exists():
            return str(venv / "bin" / "python")
    return None


def deployment(
    name: str,
    *,
    dp: int,
    local: int | None = None,
    lb: str | None = None,
    master_port: int,
    timeout_seconds: int = 600,
    socket_interface: str | None = "lo",
    namespace: str = "default",
    **parallel: Any,
) -> dict[str, Any]:
    """A ParallelDeployment with the preflight on. ``lb``: "external" (one rank a pod; the default without
    ``local``), "hybrid" (``local`` ranks a pod; the default with it) or "internal"."""
    pc: dict[str, Any] = {
        "dataParallelSize": dp,
        "dataParallelMasterPort": master_port,
        "enableExpertParallel": True,
    }
    if local is not None:
        pc["dataParallelSizeLocal"] = local
    lb = lb or ("external" if local is None else "hybrid")
    if "distributedExecutorBackend" not in parallel:
        if lb == "external":
            pc["dataParallelExternalLb"] = True
        elif lb == "hybrid":
            pc["dataParallelHybridLb"] = True
    pc.update(parallel)
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parallelConfig": pc,
            "network": {"socketInterface": socket_interface},
            "preflight": {"enabled": True, "timeoutSeconds": timeout_seconds},
            "template": {
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.1", "args": ["m"]}]}
            },
        },
    }


def pod_commands_and_envs(
    obj: dict[str, Any], pod_ip: str = "127.0.0.1"
) -> list[tuple[list[str], dict[str, str]]]:
    """Per rank pod: the preflight init container's command and environment, as the planner renders them."""
    verdict = validate_object(obj)
    if not verdict.ok:
        raise ValueError("; ".join(str(e) for e in verdict.errors))
    assert verdict.obj is not None
    fields = {"status.podIP": pod_ip}
    out = []
    for pod in plan(verdict.obj).pods:
        init = pod.body["spec"]["initContainers"][0]
        if init["name"] != PREFLIGHT_CONTAINER:
            raise ValueError(f"pod {pod.name}: the first init container is {init['name']}")
        env: dict[str, str] = {}
        for item in init["env"]:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            else:
                env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        out.append((list(init["command"]), env))
    return out


@dataclass
class PodRun:
    pod: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    report_path: Path
    started: float
    rc: int | None = None
    seconds: float = 0.0
    log: str = ""
    report: dict[str, Any] = field(default_factory=dict)


def launch(
    python: str,
    obj: dict[str, Any],
    out_dir: Path,
    *,
    pods: list[int] | None = None,
    env_changes: dict[int, dict[str, str]] | None = None,
    extra_args: tuple[str, ...] = ("--master-addr-override", "127.0.0.1"),
    extra_env: dict[str, str] | None = None,
) -> list[PodRun]:
    """Start the preflight of every pod of ``obj`` (or of ``pods``) as ``python -m wideep preflight``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    base = {**base_env(), **(extra_env or {})}
    for i, (command, env) in enumerate(pod_commands_and_envs(obj)):
        if pods is not None and i not in pods:
            continue
        if command[:1] != ["wideep"]:
            raise ValueError(f"unexpected preflight command {command}")
        full = {**base, **env, **(env_changes or {}).get(i, {})}
        log_path = out_dir / f"pod-{i}.log"
        report_path = out_dir / f"pod-{i}.json"
        argv = [python, "-m", "wideep", *command[1:], *extra_args, "--report", str(report_path)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, env=full, stdout=log, stderr=subprocess.STDOUT, cwd=out_dir)
        runs.append(PodRun(i, proc, log_path, report_path, time.monotonic()))
    return runs


def wait(runs: list[PodRun], timeout: float) -> list[PodRun]:
    """Wait for every process (killing what is left after ``timeout``); fill rc, seconds, log, report."""
    end = time.monotonic() + timeout
    pending = list(runs)
    while pending and time.monotonic() < end:
        for run in list(pending):
            rc = run.proc.poll()
            if rc is not None:
                run.rc, run.seconds = rc, time.monotonic() - run.started
                pending.remove(run)
        time.sleep(0.02)
    for run in pending:
        run.proc.kill()
        run.rc, run.seconds = run.proc.wait(), time.monotonic() - run.started
    for run in runs:
        run.log = run.log_path.read_text(errors="replace")
        if run.report_path.exists():
            run.report = json.loads(run.report_path.read_text())
    return runs
