"""``OperatorProc``: the operator as ``python -m wideep run`` for the bench's namespaces, with its own token."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cluster import free_port

from .cluster import Api
from .common import OPERATOR_USER, ROOT, BenchError, child_env
from .measure import cpu_seconds, proc_memory


@dataclass
class OperatorProc:
    """``python -m wideep run`` for one namespace with the operator's own token; optionally profiled."""

    cluster: Any
    namespaces: list[str]
    out_dir: Path
    resync_seconds: float = 60.0
    profile: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    log_path: Path = Path()
    spy: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> OperatorProc:
        tag = "-".join(self.namespaces)
        self.log_path = self.out_dir / f"operator-{tag}.log"
        args = [sys.executable]
        if self.profile is not None:
            args += ["-m", "cProfile", "-o", str(self.profile)]
        args += ["-m", "wideep", "run", "--log-format", "plain", "--resync-seconds", str(self.resync_seconds)]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        args += ["--liveness-port", str(self.liveness_port), "--metrics-port", str(self.metrics_port)]
        kubeconfig = self.cluster.user_kubeconfig(OPERATOR_USER)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=child_env({"KUBECONFIG": str(kubeconfig)}),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while "wideep operator started" not in self.log():
            if self.proc.poll() is not None:
                raise BenchError(f"operator exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"operator did not start in {timeout:.0f}s:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        spy = os.environ.get("WIDEEP_BENCH_PYSPY")  # path of a py-spy binary: sample the operator
        if spy:
            samples = self.out_dir / f"pyspy-{tag}.txt"
            self.spy = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "-o",
                    str(samples),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def memory(self) -> dict[str, int]:
        return proc_memory(self.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the operator process so far."""
        value = cpu_seconds(self.pid)
        return float("nan") if value is None else value

    def stop(self) -> int | None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.spy.wait(30)
        from devcluster.cluster import stop_group

        return None if self.proc is None else stop_group(self.proc, grace=60)


async def wait_pdep_watch(admin: Api, timeout: float = 15.0) -> float | None:
    """Wait until a watch of ParallelDeployments is open on the API server (kopf opens it only after the
    operator's start-up handlers): a user's apply meets a running operator, not one still starting. Nothing
    else watches ParallelDeployments before the observer starts. Returns the seconds waited (None: timed out)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        _status, body = await admin.call("GET", "/metrics")
        text = body.get("raw", "") if isinstance(body, dict) else ""
        for line in text.splitlines():
            if (
                line.startswith("apiserver_longrunning_requests{")
                and 'resource="paralleldeployments"' in line
                and 'verb="WATCH"' in line
                and float(line.rsplit(" ", 1)[1]) >= 1
            ):
                return time.monotonic() - t0
        await asyncio.sleep(0.05)
    return None
