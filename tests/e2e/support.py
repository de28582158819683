"""Helpers for end-to-end tests: the operator as a real `wideep run` process, object builders, waits."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import yaml

from devcluster.cluster import EXIT_LABEL, LocalCluster, stop_group
from wideep.api import constants as c

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
API = f"/apis/{c.GROUP}/{c.VERSION}"


def create_namespace(
    cluster: LocalCluster, labels: dict[str, str] | None = None, *, wait_sa: bool = True
) -> str:
    """A fresh namespace ``t-<random>`` labelled ``wideep-test=1``; by default waits until its default
    ServiceAccount exists (pods need it)."""
    name = f"t-{secrets.token_hex(4)}"
    meta = {"name": name, "labels": {"wideep-test": "1", **(labels or {})}}
    cluster.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    if wait_sa:
        cluster.wait_for(
            f"serviceaccount/default in {name}",
            lambda: cluster.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200,
            timeout=60,
            interval=0.05,
        )
    return name


def delete_namespace(cluster: LocalCluster, name: str) -> None:
    """Delete a namespace without waiting (best effort)."""
    with contextlib.suppress(Exception):
        cluster.request("DELETE", f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})


def install_crd(cluster: LocalCluster) -> None:
    """Apply the generated CRD and the deprecation-warning policy (``crds/``) and wait until it is served."""
    proc = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    assert proc.returncode == 0, proc.stderr

    def established() -> bool:
        obj = cluster.api("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c.CRD_NAME}")
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(cd["type"] == "Established" and cd["status"] == "True" for cd in conds)

    cluster.wait_for(f"crd/{c.CRD_NAME} Established", established, timeout=60, interval=0.1)


def add_pool_node(cluster: LocalCluster, pool: str, name: str, gpus: int) -> None:
    """A fake node labelled and tainted ``pool=<pool>`` (see tainted_pool)."""
    cluster.create_fake_node(name, gpus=gpus, labels={"pool": pool})
    cluster.api(
        "PATCH",
        f"/api/v1/nodes/{name}",
        {"spec": {"taints": [{"key": "pool", "value": pool, "effect": "NoSchedule"}]}},
        content_type="application/merge-patch+json",
    )


@contextlib.contextmanager
def tainted_pool(
    cluster: LocalCluster, value: str, nodes: int, *, gpus: int = 8, drain_timeout: float = 0
) -> Iterator[str]:
    """``nodes`` extra fake nodes x ``gpus`` GPUs, labelled and tainted ``pool=<value>`` so that only groups
    that tolerate them (``on_pool``) land there; yields the value once all are Ready and deletes the nodes
    afterwards (after waiting up to ``drain_timeout`` s for pods to leave them)."""
    names = [f"{value}-{i}" for i in range(nodes)]
    for name in names:
        add_pool_node(cluster, value, name, gpus)

    def ready() -> bool:
        items = cluster.api("GET", f"/api/v1/nodes?labelSelector=pool%3D{value}")["items"]
        return len(items) == nodes and all(
            any(cd["type"] == "Ready" and cd["status"] == "True" for cd in n["status"].get("conditions", []))
            for n in items
        )

    cluster.wait_for(f"{nodes} pool nodes Ready", ready, timeout=90)
    try:
        yield value
    finally:
        if drain_timeout > 0:

            def drained() -> bool:
                pods = cluster.api("GET", "/api/v1/pods")["items"]
                return not [p for p in pods if (p["spec"].get("nodeName") or "") in names]

            with contextlib.suppress(TimeoutError):
                cluster.wait_for("pods off the pool nodes", drained, timeout=drain_timeout, interval=0.5)
        for name in names:
            cluster.request("DELETE", f"/api/v1/nodes/{name}")


def on_pool(obj: dict[str, Any], pool: str) -> dict[str, Any]:
    """Schedule a ParallelDeployment's pods onto a ``tainted_pool``."""
    spec = obj["spec"]["template"]["spec"]
    spec["nodeSelector"] = {"pool": pool}
    spec["tolerations"] = [{"key": "pool", "operator": "Equal", "value": pool, "effect": "NoSchedule"}]
    return obj


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768-60999 here). A port the kernel hands out for
    port 0 lies inside that range, where every outgoing connection takes its local port too, so it could be
    taken before the operator binds it (seen once in CI: kopf's health endpoint failed with EADDRINUSE)."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def example(name: str, namespace: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    doc["metadata"]["namespace"] = namespace
    return doc


def pdep(
    name: str,
    namespace: str,
    *,
    dp: int = 4,
    tp: int = 1,
    external: bool = True,
    max_restarts: int | None = None,
    backoff: int = 0,
    **pc: Any,
) -> dict[str, Any]:
    parallel: dict[str, Any] = {
        "dataParallelSize": dp,
        "tensorParallelSize": tp,
        "enableExpertParallel": True,
    }
    if external and dp > 1:
        parallel["dataParallelExternalLb"] = True
    parallel.update(pc)
    spec: dict[str, Any] = {
        "parallelConfig": parallel,
        "restartPolicy": {"backoffSeconds": backoff},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.1", "args": ["some/model"]}]
            },
        },
    }
    if max_restarts is not None:
        spec["restartPolicy"]["maxRestarts"] = max_restarts
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class Operator:
    """`python -m wideep run` as a subprocess, scoped to namespaces, with its metrics and health ports."""

    def __init__(
        self,
        cluster: LocalCluster,
        namespaces: list[str],
        log_dir: Path,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.env = env or {}
        self.cluster = cluster
        self.namespaces = namespaces
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
        env = {**os.environ, **self.cluster.env(), "PYTHONPATH": str(ROOT / "operator"), **self.env}
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


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")


class Kube:
    """Test-side API access through the admin credentials (urllib, no operator code)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                self.cluster_kubectl(),
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=test-user",
                "-f",
                "-",
            ],
            input=json.dumps(obj),
            capture_output=True,
            text=True,
            env={**os.environ, **self.cluster.env()},
            check=False,
        )

    def cluster_kubectl(self) -> str:
        from devcluster.cluster import find_kubectl

        return find_kubectl()

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cluster_kubectl(), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.cluster.env()},
            check=False,
        )

    def get_pdep(self, ns: str, name: str) -> dict[str, Any] | None:
        status, body = self.cluster.request("GET", f"{API}/namespaces/{ns}/{c.PLURAL}/{name}")
        return body if status == 200 else None

    def pods(self, ns: str, name: str | None = None) -> list[dict[str, Any]]:
        sel = f"?labelSelector={c.LABEL_DEPLOYMENT}%3D{name}" if name else ""
        items: list[dict[str, Any]] = self.cluster.api("GET", f"/api/v1/namespaces/{ns}/pods{sel}")["items"]
        return items

    def services(self, ns: str, name: str) -> list[dict[str, Any]]:
        sel = f"?labelSelector={c.LABEL_DEPLOYMENT}%3D{name}"
        items: list[dict[str, Any]] = self.cluster.api("GET", f"/api/v1/namespaces/{ns}/services{sel}")[
            "items"
        ]
        return items

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.api(
            "GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{name}"
        )["items"]
        return items

    def condition(self, ns: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get_pdep(ns, name)
        for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return None

    def is_ready(self, ns: str, name: str) -> bool:
        obj = self.get_pdep(ns, name)
        if not obj:
            return False
        st = obj.get("status") or {}
        cond = self.condition(ns, name, c.COND_READY)
        return bool(
            cond
            and cond["status"] == "True"
            and st.get("observedGeneration") == obj["metadata"]["generation"]
        )

    def wait_ready(self, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
        wait_until(f"{ns}/{name} Ready", lambda: self.is_ready(ns, name), timeout=timeout)
        obj = self.get_pdep(ns, name)
        assert obj is not None
        return obj

    def live_pods(self, ns: str, name: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(ns, name) if not p["metadata"].get("deletionTimestamp")]

    def replaced(self, ns: str, name: str, before: set[str], count: int) -> bool:
        """The group runs ``count`` live pods, none of them in ``before``, and is Ready. One listing, taken
        before the status is read: two listings could see the old pods, then none while the restart deletes
        them, and the status read first could still be the old generation's Ready."""
        live = uids(self.live_pods(ns, name))
        return len(live) == count and not (live & before) and self.is_ready(ns, name)

    def fail_pod(self, ns: str, pod: str) -> None:
        patch = {"metadata": {"labels": {"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}}}
        self.cluster.api(
            "PATCH", f"/api/v1/namespaces/{ns}/pods/{pod}", patch, content_type="application/merge-patch+json"
        )

    def exit_pod(self, ns: str, pod: str, message: str = "") -> None:
        """kwok ends the Running pod's containers with exit code 0 and the pod Succeeded (our stage
        pod-exited.yaml): what a vLLM rank does when a DP peer died."""
        meta: dict[str, Any] = {"labels": {EXIT_LABEL: "true"}}
        if message:
            meta["annotations"] = {f"{EXIT_LABEL}/message": message}
        self.cluster.api(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{pod}",
            {"metadata": meta},
            content_type="application/merge-patch+json",
        )

    def delete_all(self, ns: str, timeout: float = 120) -> None:
        self.cluster.request("DELETE", f"{API}/namespaces/{ns}/{c.PLURAL}", None)
        wait_until(f"pods of {ns} gone", lambda: not self.pods(ns), timeout=timeout, interval=0.3)


def uids(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["uid"] for p in pods}


def deep(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj)


PDEPS = f"/apis/{c.API_VERSION}/namespaces/{{ns}}/{c.PLURAL}"


class Watcher:
    """Records every event of a namespaced collection (pods by default) from the moment it is entered."""

    def __init__(
        self, cluster: LocalCluster, namespace: str, collection: str = "/api/v1/namespaces/{ns}/pods"
    ) -> None:
        self.cluster = cluster
        self.path = collection.format(ns=namespace)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []  # time.monotonic() when each event arrived
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rv = self.cluster.api("GET", self.path)["metadata"]["resourceVersion"]
        url = f"{self.cluster.server}{self.path}?watch=1&resourceVersion={rv}&timeoutSeconds=120"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.cluster.token}"})
        ctx = ssl.create_default_context(cafile=str(self.cluster.ca_path))
        with urllib.request.urlopen(req, context=ctx, timeout=130) as resp:
            for line in resp:
                if self._stop.is_set():
                    return
                ev = json.loads(line)
                self.times.append(time.monotonic())
                self.events.append((ev["type"], ev["object"]))

    def __enter__(self) -> Self:
        self.thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def first_rv(self, pred: Callable[[str, dict[str, Any]], bool]) -> int:
        """The resourceVersion of the first event matching pred. One etcd serves every resource here, so
        resourceVersions of pods and ParallelDeployments are revisions of one store and compare in order."""
        return next(int(o["metadata"]["resourceVersion"]) for t, o in self.events if pred(t, o))
