"""The operator as a real ``python -m wideep run`` process, from ``operator/`` of this checkout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devcluster.cluster import LocalCluster, stop_group
from tests.support import ROOT
from tests.support.cluster import free_port
from tests.support.waits import wait_until


class Operator:
    """`python -m wideep run` as a subprocess, scoped to namespaces, with its metrics and health ports.

    It uses the cluster's admin credentials, or with ``kubeconfig`` nothing but that kubeconfig (a
    ServiceAccount's token, say: no admin fallback from the environment)."""

    def __init__(
        self,
        cluster: LocalCluster,
        namespaces: list[str],
        log_dir: Path,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        kubeconfig: Path | None = None,
    ):
        self.env = env or {}
        self.cluster = cluster
        self.namespaces = namespaces
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / f"operator-{int(time.time() * 1000)}.log"
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Operator:
        args = [sys.executable, "-m", "wideep", "run", "--log-format", "plain", "--resync-seconds", "3"]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        args += [
            "--liveness-port",
            str(self.liveness_port),
            "--metrics-port",
            str(self.metrics_port),
            *self.extra,
        ]
        if self.kubeconfig is None:
            env = {**os.environ, **self.cluster.env(), "PYTHONPATH": str(ROOT / "operator"), **self.env}
        else:
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "WIDEEP_CLUSTER_"))
            }
            env.update({"KUBECONFIG": str(self.kubeconfig), "PYTHONPATH": str(ROOT / "operator"), **self.env})
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        if wait:
            wait_until("operator liveness", self.alive, timeout=60)
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited; log:\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def writes(self) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith("wideep_api_writes_total"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        return None if self.proc is None else stop_group(self.proc, grace=20)


def operator_log_clean(log: Path) -> None:
    """No request of the operator was refused by RBAC (the API server names the ServiceAccount then)."""
    text = log.read_text(errors="replace")
    refused = 'User "system:serviceaccount:' in text or "403 Forbidden" in text or "APIForbiddenError" in text
    assert not refused, f"the operator was refused something:\n{text[-4000:]}"
