"""The bench's control plane and its own API calls: ``make_cluster`` (LocalCluster with the bench identities
and an audit log of their requests), ``Api`` (a small aiohttp client), namespaces, waiting until the cluster
is quiet, and emptying a namespace between runs."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .common import (
    BASELINE_USER,
    CONCURRENCY,
    LWS_USER,
    OPERATOR_USER,
    PD_PATH,
    PLURAL,
    USERS,
    BenchError,
    log,
)
from .measure import cpu_seconds

# --------------------------------------------------------------------------------------- cluster


def _cluster_base() -> type:
    from devcluster.cluster import LocalCluster

    return LocalCluster


AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    users: ["{OPERATOR_USER}", "{BASELINE_USER}", "{LWS_USER}"]
  # Who else works on the pods: the scheduler's bindings and kwok's status updates (for the timelines).
  - level: Metadata
    verbs: ["create", "update", "patch"]
    resources:
      - group: ""
        resources: ["pods/binding", "pods/status"]
  - level: None
"""


def make_cluster(state_dir: Path, nodes: int, gpus_per_node: int) -> Any:
    """A LocalCluster with the bench's two identities and an audit log of their requests."""
    base = _cluster_base()

    class BenchCluster(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(state_dir, nodes=nodes, gpus_per_node=gpus_per_node, verbose=False)
            self.user_tokens = {u: secrets.token_hex(24) for u in USERS}

        @property
        def audit_log(self) -> Path:
            return Path(self.logs_dir) / "audit.log"

        def _apiserver_args(self, pki: Any, etcd_client: int, port: int, tokens: Path) -> list[str]:
            # Both identities are in system:masters like the admin, so API priority and fairness treats
            # the operator, the baseline and the admin alike (all exempt).
            known = tokens.read_text()
            with tokens.open("a") as f:
                for user, token in self.user_tokens.items():
                    if token not in known:  # a component restart calls this again
                        f.write(f'{token},{user},{user}-uid,"system:masters"\n')
            policy = Path(self.state_dir) / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY)
            return [
                *super()._apiserver_args(pki, etcd_client, port, tokens),
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
                "--audit-log-mode=blocking",
            ]

        def user_kubeconfig(self, user: str) -> Path:
            path = Path(self.state_dir) / f"kubeconfig-{user}"
            self.write_kubeconfig(path, self.user_tokens[user], user)
            return path

    return BenchCluster()


def cluster_pids(cluster: Any) -> dict[str, int]:
    pids: dict[str, int] = dict(cluster.pids())
    pids["bench"] = os.getpid()
    return pids


# --------------------------------------------------------------------------------------- API client


class Api:
    """A small aiohttp client for the bench's own calls (setup, cleanup, the user's applies)."""

    def __init__(self, server: str, ca: Path, token: str, concurrency: int = CONCURRENCY) -> None:
        self.server = server
        self.ca = ca
        self.token = token
        self.concurrency = concurrency
        self._session: Any = None
        self._sem = asyncio.Semaphore(concurrency)

    async def session(self) -> Any:
        import aiohttp

        if self._session is None:
            ctx = ssl.create_default_context(cafile=str(self.ca))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=120),
                headers={"Authorization": f"Bearer {self.token}", "User-Agent": "wideep-bench"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        s = await self.session()
        if body is not None:
            data = json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        async with (
            self._sem,
            s.request(method, self.server + path, data=data, params=params, headers=headers) as r,
        ):
            raw = await r.read()
            try:
                decoded = json.loads(raw) if raw else {}
            except ValueError:
                decoded = {"raw": raw.decode(errors="replace")}
            return r.status, decoded

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, decoded = await self.call(method, path, body, **kw)
        if not 200 <= status < 300:
            raise BenchError(f"{method} {path} -> {status}: {decoded.get('message', decoded)}")
        return decoded

    async def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        result = await self.ok("GET", path, params=params or None)
        items: list[dict[str, Any]] = result.get("items", [])
        return items


async def wait_for(
    what: str, predicate: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------- between runs


async def make_namespace(api: Api, ns: str) -> None:
    status, body = await api.call(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    if status not in (201, 409):
        raise BenchError(f"namespace {ns}: {status} {body}")

    async def sa() -> bool:
        st, _ = await api.call("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")
        return st == 200

    await wait_for(f"serviceaccount default in {ns}", sa, 60)


async def request_rate(api: Api, window: float) -> float:
    """Requests per second the API server completed over ``window`` (apiserver_request_total)."""

    async def total() -> float:
        s = await api.session()
        async with s.get(api.server + "/metrics") as r:
            text = await r.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("apiserver_request_total{")
        )

    a = await total()
    await asyncio.sleep(window)
    b = await total()
    return (b - a - 1) / window


QUIET_RATE = 12.0  # requests/s over a 2 s window; an idle bench cluster makes ~3-10 (kwok's node leases)
QUIET_CPU = 0.1  # CPU seconds of the controller-manager (and of the scheduler, kwok) per 2 s window


async def wait_quiet(api: Api, pids: dict[str, int], timeout: float = 120.0) -> float:
    """Wait until the API server and the background controllers are done with the last run.

    The controller-manager works through a deleted run at its own 20 QPS (Endpoints, EndpointSlices,
    garbage collection) for tens of seconds after the bench has emptied the namespace; a run that
    starts meanwhile would pay for its predecessor. Quiet: two consecutive 2 s windows with at most
    ``QUIET_RATE`` requests/s and at most ``QUIET_CPU`` CPU seconds in each background component.
    """
    t0 = time.monotonic()
    watched = {k: v for k, v in pids.items() if k in ("kube-controller-manager", "kube-scheduler", "kwok")}
    calm = 0
    while time.monotonic() - t0 < timeout:
        before = {k: cpu_seconds(v) or 0.0 for k, v in watched.items()}
        rate = await request_rate(api, 2.0)
        busy = max(((cpu_seconds(v) or 0.0) - before[k] for k, v in watched.items()), default=0.0)
        calm = calm + 1 if rate <= QUIET_RATE and busy <= QUIET_CPU else 0
        if calm >= 2:
            return time.monotonic() - t0
    log(f"the cluster is still busy after {timeout:.0f}s; going on")
    return time.monotonic() - t0


async def cleanup(api: Api, ns: str, timeout: float = 180) -> float:
    """Remove every pod, Service, ParallelDeployment, EndpointSlice and Endpoints of ``ns`` quickly.

    Pods go with gracePeriodSeconds=0 in one deletecollection; Services (no deletecollection) one by one
    at the bench's concurrency; the owner last, so the garbage collector (20 QPS) has nothing to do.
    """
    t0 = time.monotonic()
    grace0 = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
    await api.call("DELETE", f"/api/v1/namespaces/{ns}/pods", grace0)
    svcs = await api.items(f"/api/v1/namespaces/{ns}/services")
    await asyncio.gather(
        *(api.call("DELETE", f"/api/v1/namespaces/{ns}/services/{s['metadata']['name']}") for s in svcs)
    )
    await api.call("DELETE", f"{PD_PATH}/namespaces/{ns}/{PLURAL}")

    async def empty() -> bool:
        await api.call("DELETE", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices")
        await api.call("DELETE", f"/api/v1/namespaces/{ns}/endpoints")
        pods = await api.items(f"/api/v1/namespaces/{ns}/pods", limit="1")
        left = await api.items(f"/api/v1/namespaces/{ns}/services", limit="1")
        pds = await api.items(f"{PD_PATH}/namespaces/{ns}/{PLURAL}", limit="1")
        if pods:
            await api.call("DELETE", f"/api/v1/namespaces/{ns}/pods", grace0)
        return not pods and not left and not pds

    await wait_for(f"namespace {ns} emptied", empty, timeout, interval=0.5)
    return time.monotonic() - t0
