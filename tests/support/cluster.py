"""Things on the local control plane the tests set up around the operator: namespaces, pools of fake GPU
nodes, free ports, and ``kubectl auth can-i``."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
from collections.abc import Iterator

from devcluster.cluster import LocalCluster


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
    that tolerate them (``builders.on_pool``) land there; yields the value once all are Ready and deletes the
    nodes afterwards (after waiting up to ``drain_timeout`` s for pods to leave them)."""
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


def can_i(cluster: LocalCluster, who: str, *args: str) -> bool:
    """``kubectl auth can-i ARGS --as=<who>``: whether the API server's authorizer lets ``who`` do it."""
    proc = cluster.kubectl("auth", "can-i", *args, f"--as={who}")
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stdout + proc.stderr
    return answer == "yes"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
