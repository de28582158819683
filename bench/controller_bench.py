"""The operator on a real local control plane, measured against the API server's own floor.

Pieces used by ``bench.run`` (``make bench``):

``BenchCluster``   LocalCluster plus two extra identities (``wideep-bench-operator`` for the operator,
                   ``wideep-bench-baseline`` for the baseline client and the user who applies objects) and
                   an API-server audit log of every request those two make: the write counts are read from
                   the API server, not from the operator.
``Observer``       a separate process (``python -m bench.controller_bench observe``) that lists and
                   watches one namespace and prints the moments (CLOCK_MONOTONIC, shared by every process
                   on the machine) when milestones are reached: all pods and Services exist, all pods
                   Ready, the ParallelDeployment Ready. Measuring from outside both contenders keeps the
                   observer's CPU out of either one's process.
``OperatorProc``   ``python -m wideep run`` as a subprocess with its own token, metrics and RSS; optionally
                   under cProfile.
``operator_case``  apply → created → Ready, write counts (audit and metrics), a no-op resync, gang
                   recovery; ``memory_case``: RSS after 100 ParallelDeployments x 16 ranks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "deepseek-v3-wide-ep.yaml"
OPERATOR_USER = "wideep-bench-operator"
BASELINE_USER = "wideep-bench-baseline"
LWS_USER = "wideep-bench-lws"  # LeaderWorkerSet's controller (bench/lws.py)
USERS = (OPERATOR_USER, BASELINE_USER, LWS_USER)
GROUP = "wideep.dev"
VERSION = "v1alpha1"
PLURAL = "paralleldeployments"
PD_PATH = f"/apis/{GROUP}/{VERSION}"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
CONCURRENCY = 64  # the operator's default (--concurrency), used by the baseline client too
PD_NAME = "ds"


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = f"{ROOT / 'operator'}{os.pathsep}{ROOT}"
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------------------- objects


def pdep_doc(name: str, namespace: str, ranks: int) -> dict[str, Any]:
    """The DeepSeek-style example (external LB, EP, EPLB, DBO, DeepEP) with ``dataParallelSize = ranks``.

    The example's 64Gi memory limit is dropped so that pods pack onto the fake nodes by GPU count alone.
    """
    import yaml

    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"]["parallelConfig"]["dataParallelSize"] = ranks
    doc["spec"]["restartPolicy"] = {"maxRestarts": 3, "backoffSeconds": 0}
    for ctr in doc["spec"]["template"]["spec"]["containers"]:
        ctr.pop("resources", None)
    return doc


def planned_objects(doc: dict[str, Any], owner_uid: str) -> list[dict[str, Any]]:
    """Exactly what the operator creates for ``doc``: ``plan()`` of the validated object, in the order
    the operator issues them (pods, then Services)."""
    from wideep.api.validate import validate_object
    from wideep.planning.planner import plan

    verdict = validate_object(copy.deepcopy(doc))
    if not verdict.ok or verdict.obj is None:
        raise BenchError(f"bench spec is invalid: {verdict.errors}")
    verdict.obj.metadata["uid"] = owner_uid
    group = plan(verdict.obj, group_generation=1)
    return [*(p.body for p in group.pods), *group.services]


def kind_counts(objects: list[dict[str, Any]]) -> dict[str, int]:
    """{"pods": ..., "services": ...} of a list of planned objects."""
    return {
        k: sum(o["kind"] == kind for o in objects) for k, kind in (("pods", "Pod"), ("services", "Service"))
    }


def planned_counts(n: int) -> dict[str, int]:
    """How many pods and Services the bench spec with ``dataParallelSize = n`` plans (N pods, 3 Services)."""
    return kind_counts(planned_objects(pdep_doc(PD_NAME, "bench", n), "00000000-0000-4000-8000-000000000000"))


def object_path(obj: dict[str, Any]) -> str:
    ns = obj["metadata"]["namespace"]
    if obj["kind"] == "Pod":
        return f"/api/v1/namespaces/{ns}/pods"
    if obj["kind"] == "Service":
        return f"/api/v1/namespaces/{ns}/services"
    if obj["kind"] == "ParallelDeployment":
        return f"{PD_PATH}/namespaces/{ns}/{PLURAL}"
    raise BenchError(f"unexpected kind {obj['kind']}")


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


def pod_windows(events: list[dict[str, Any]], t0_wall: float) -> dict[str, Any]:
    """When the scheduler bound the pods and when kwok wrote their status, relative to t0."""
    return {
        "bind_window": Audit.window(events, None, t0_wall, ("create",), ("pods/binding",)),
        "kwok_window": Audit.window(events, None, t0_wall, ("patch", "update"), ("pods/status",)),
        "pd_window": Audit.window(events, BASELINE_USER, t0_wall, ("create",), ("paralleldeployments",)),
    }


class Audit:
    """Reads the API server's audit log (JSON lines, one per completed request) between two offsets."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def events(self, start: int, end: int | None = None) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(end - start)
        out = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    @staticmethod
    def window(
        events: Iterable[dict[str, Any]],
        user: str | None,
        t0_wall: float,
        verbs: Iterable[str],
        resources: Iterable[str],
    ) -> dict[str, float | int]:
        """First request received and last response sent by ``user`` for ``verbs`` on ``resources``
        (``resource[/subresource]``), in seconds after the wall-clock time ``t0_wall``."""
        import datetime as dt

        verbs, resources = set(verbs), set(resources)
        first = last = None
        count = 0
        for ev in events:
            if ev.get("stage") != "ResponseComplete":
                continue
            if user is not None and (ev.get("user") or {}).get("username") != user:
                continue
            ref = ev.get("objectRef") or {}
            res = ref.get("resource", "") + ("/" + ref["subresource"] if ref.get("subresource") else "")
            if ev.get("verb") not in verbs or res not in resources:
                continue
            a = dt.datetime.fromisoformat(ev["requestReceivedTimestamp"]).timestamp()
            b = dt.datetime.fromisoformat(ev["stageTimestamp"]).timestamp()
            first = a if first is None else min(first, a)
            last = b if last is None else max(last, b)
            count += 1
        if first is None or last is None:
            return {"count": 0}
        return {"count": count, "first": round(first - t0_wall, 4), "last": round(last - t0_wall, 4)}

    @staticmethod
    def count(
        events: Iterable[dict[str, Any]], user: str, verbs: Iterable[str] | None = None
    ) -> Counter[str]:
        """Requests of ``user`` by ``verb resource[/subresource]`` (responses with any status code)."""
        wanted = set(verbs) if verbs is not None else None
        out: Counter[str] = Counter()
        for ev in events:
            if ev.get("stage") != "ResponseComplete" or (ev.get("user") or {}).get("username") != user:
                continue
            verb = ev.get("verb", "?")
            if wanted is not None and verb not in wanted:
                continue
            ref = ev.get("objectRef") or {}
            res = ref.get("resource", ev.get("requestURI", "?"))
            if ref.get("subresource"):
                res += "/" + ref["subresource"]
            out[f"{verb} {res}"] += 1
        return out


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


# --------------------------------------------------------------------------------------- observer


class Observer:
    """Parent side of ``observe``: start it (returns once its watches are open), then wait for milestones."""

    def __init__(self, cluster: Any, ns: str, mode: str, n: int, pd: bool, services: int | None = None):
        self.cluster = cluster
        self.log_path = ROOT / "bench" / "out" / f"observer-{ns}-{mode}.log"
        self.args = [
            "--server",
            cluster.server,
            "--ca",
            str(cluster.ca_path),
            "--namespace",
            ns,
            "--mode",
            mode,
            "--n",
            str(n),
            "--services",
            str(planned_counts(n)["services"] if services is None else services),
        ]
        if pd:
            self.args.append("--pd")
        self.milestones: dict[str, float] = {}
        self.info: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> Observer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as err:
            self._proc = await self._spawn(err)
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 60)
        if line.strip() != b"READY":
            raise BenchError(f"observer did not start: {line!r}; {self.log_path}: {self._log_tail()}")
        self._reader = asyncio.create_task(self._read())
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    async def _spawn(self, err: Any) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.controller_bench",
            "observe",
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env=child_env({"WIDEEP_BENCH_TOKEN": self.cluster.token}),
            limit=2**24,
        )

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            async for raw in self._proc.stdout:
                msg = json.loads(raw)
                if "m" in msg:
                    self.milestones[msg["m"]] = msg["t"]
                else:
                    self.info.update(msg)
                self._changed.set()
        finally:
            self._changed.set()

    async def wait(self, names: Iterable[str], timeout: float) -> dict[str, float]:
        names = list(names)
        deadline = time.monotonic() + timeout
        while not all(n in self.milestones for n in names):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"timed out after {timeout:.0f}s; milestones so far: {self.milestones}; "
                    f"observer log {self.log_path}: {self._log_tail()}"
                )
            if self._reader is not None and self._reader.done():
                raise BenchError(
                    f"observer exited; milestones so far: {self.milestones}; "
                    f"observer log {self.log_path}: {self._log_tail()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return dict(self.milestones)

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class _Tracker:
    """Child side: counts pods/Services from watch events and emits milestones once each."""

    def __init__(self, mode: str, n: int, n_services: int, pd: bool) -> None:
        self.mode, self.n, self.n_services, self.want_pd = mode, n, n_services, pd
        self.pods: dict[str, tuple[bool, bool, bool]] = {}  # uid -> (new, live, ready)
        self.old_uids: set[str] = set()
        self.services: set[str] = set()
        self.live = self.ready = self.old_present = 0
        self.base_group_generation = 0
        self.done: set[str] = set()
        self.wanted = {"created", "pods_ready"} | ({"pd_ready"} if pd else set())
        if mode == "recovery":
            self.wanted |= {"failed"}
        self.events = 0

    def emit(self, name: str, t: float) -> None:
        if name not in self.done:
            self.done.add(name)
            sys.stdout.write(json.dumps({"m": name, "t": t}) + "\n")
            sys.stdout.flush()

    def snapshot(self, pods: list[dict[str, Any]], pdeps: list[dict[str, Any]]) -> None:
        if self.mode == "recovery":
            self.old_uids = {p["metadata"]["uid"] for p in pods}
            self.old_present = len(self.old_uids)
            for pd in pdeps:
                self.base_group_generation = int((pd.get("status") or {}).get("groupGeneration") or 0)

    def pod(self, etype: str, pod: dict[str, Any], t: float) -> None:
        self.events += 1
        meta = pod["metadata"]
        uid = meta["uid"]
        st = pod.get("status") or {}
        if uid in self.old_uids:
            if st.get("phase") == "Failed":
                self.emit("failed", t)
            if etype == "DELETED":
                self.old_uids.discard(uid)
                self.old_present -= 1
                if self.old_present == 0:
                    self.emit("old_gone", t)
            return
        live = etype != "DELETED" and not meta.get("deletionTimestamp")
        ready = (
            live
            and st.get("phase") == "Running"
            and any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
            )
        )
        prev = self.pods.pop(uid, (True, False, False))
        self.live += int(live) - int(prev[1])
        self.ready += int(ready) - int(prev[2])
        if etype != "DELETED":
            self.pods[uid] = (True, live, ready)
        if self.live >= 1:
            self.emit("first_pod", t)
        if self.live >= self.n:
            self.emit("pods_created", t)
            if len(self.services) >= self.n_services or self.mode == "recovery":
                self.emit("created", t)
        if self.ready >= self.n:
            self.emit("pods_ready", t)

    def service(self, etype: str, svc: dict[str, Any], t: float) -> None:
        self.events += 1
        name = svc["metadata"]["name"]
        if etype == "DELETED":
            self.services.discard(name)
        else:
            self.services.add(name)
        if len(self.services) >= self.n_services and self.mode == "create":
            self.emit("services_created", t)
            if self.live >= self.n:
                self.emit("created", t)

    def pdep(self, etype: str, pd: dict[str, Any], t: float) -> None:
        self.events += 1
        if etype == "DELETED":
            return
        st = pd.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
        )
        current = st.get("observedGeneration") == pd["metadata"].get("generation")
        newer = int(st.get("groupGeneration") or 0) > self.base_group_generation or self.mode == "create"
        if ready and current and newer:
            self.emit("pd_ready", t)

    def finished(self) -> bool:
        return self.wanted <= self.done


async def _observe(args: argparse.Namespace) -> None:
    import aiohttp

    token = os.environ["WIDEEP_BENCH_TOKEN"]
    ctx = ssl.create_default_context(cafile=args.ca)
    tracker = _Tracker(args.mode, args.n, args.services, args.pd)
    ns = args.namespace
    paths = {
        "pod": f"/api/v1/namespaces/{ns}/pods",
        "service": f"/api/v1/namespaces/{ns}/services",
        "pdep": f"{PD_PATH}/namespaces/{ns}/{PLURAL}",
    }
    handlers = {"pod": tracker.pod, "service": tracker.service, "pdep": tracker.pdep}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "wideep-bench"}
    done = asyncio.Event()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=8), headers=headers, timeout=aiohttp.ClientTimeout()
    ) as s:
        lists: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        for kind, path in paths.items():
            for attempt in range(20):
                async with s.get(args.server + path) as r:
                    body = await r.json()
                if r.status == 200:
                    break
                if r.status != 429 or attempt == 19:
                    raise BenchError(f"list {path}: {r.status} {body}")
                await asyncio.sleep(0.5)
            lists[kind] = (body["metadata"]["resourceVersion"], body["items"])
        tracker.snapshot(lists["pod"][1], lists["pdep"][1])
        now = time.monotonic()
        for kind, (_, items) in lists.items():
            for item in items:
                handlers[kind]("ADDED", item, now)

        opened = 0
        all_open = asyncio.Event()

        async def watch(kind: str) -> None:
            nonlocal opened
            rv = lists[kind][0]
            first = True
            while True:  # re-open from the last resourceVersion if the server ends the stream
                params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
                async with s.get(args.server + paths[kind], params=params) as r:
                    if r.status != 200:
                        raise BenchError(f"watch {kind}: {r.status} {await r.text()}")
                    if first:
                        first = False
                        opened += 1
                        if opened == len(paths):
                            all_open.set()
                    buf = b""
                    async for chunk in r.content.iter_any():
                        t = time.monotonic()
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            if not line.strip():
                                continue
                            ev = json.loads(line)
                            if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                                handlers[kind](ev["type"], ev["object"], t)
                                rv = ev["object"]["metadata"]["resourceVersion"]
                            elif ev["type"] == "BOOKMARK":
                                rv = ev["object"]["metadata"]["resourceVersion"]
                            elif ev["type"] == "ERROR":
                                raise BenchError(f"watch {kind}: {ev['object']}")
                        if tracker.finished():
                            done.set()
                print(
                    f"{time.strftime('%H:%M:%S')} watch {kind} ended at rv {rv}; re-opening", file=sys.stderr
                )

        async def report() -> None:
            while True:
                await asyncio.sleep(5)
                print(
                    f"{time.strftime('%H:%M:%S')} events={tracker.events} live={tracker.live} "
                    f"ready={tracker.ready} services={len(tracker.services)} done={sorted(tracker.done)}",
                    file=sys.stderr,
                    flush=True,
                )

        tasks = [asyncio.create_task(watch(k)) for k in paths]
        reporter = asyncio.create_task(report())
        await asyncio.wait_for(all_open.wait(), 30)
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        if tracker.finished():
            done.set()
        waiter = asyncio.create_task(done.wait())
        finished, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in [waiter, reporter, *tasks]:
            task.cancel()
        for task in finished:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        sys.stdout.write(json.dumps({"events": tracker.events}) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------------------- CPU


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (children not included), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs of the machine spent not idle since boot (/proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def all_process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process on the machine: pid -> (command, seconds)."""
    tck = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tck)
    return out


def top_others(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: Iterable[int], k: int = 6
) -> list[tuple[str, float]]:
    """The processes outside ``ours`` that used the most CPU between two ``all_process_cpu`` scans
    (processes that started in between count from zero), summed by command name."""
    mine = set(ours)
    used: dict[str, float] = {}
    for pid, (name, secs) in after.items():
        if pid in mine:
            continue
        prev = before.get(pid)
        delta = secs - (prev[1] if prev and prev[0] == name else 0.0)
        if delta > 0:
            used[name] = used.get(name, 0.0) + delta
    top = sorted(used.items(), key=lambda kv: kv[1], reverse=True)[:k]
    return [(name, round(v, 2)) for name, v in top]


class CpuSampler:
    """Samples the CPU time of named processes every ``interval`` seconds, to split a measured window
    into CPU seconds per process (kube-apiserver, etcd, the operator, ...)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._task: asyncio.Task[None] | None = None
        self.scan_start: dict[int, tuple[str, float]] = {}
        self.top_others: list[tuple[str, float]] = []

    def sample(self) -> None:
        now = time.monotonic()
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        values["machine"] = machine_busy_seconds()
        self.samples.append((now, {k: v for k, v in values.items() if v is not None}))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> CpuSampler:
        self.scan_start = all_process_cpu()
        self.sample()
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()
        self.top_others = top_others(self.scan_start, all_process_cpu(), self.pids.values())

    def between(self, a: float, b: float) -> dict[str, float]:
        """CPU seconds per process from the last sample at or before ``a`` to the first at or after ``b``."""
        before = [smp for smp in self.samples if smp[0] <= a] or self.samples[:1]
        after = [smp for smp in self.samples if smp[0] >= b] or self.samples[-1:]
        (_, x), (_, y) = before[-1], after[0]
        out = {k: round(y[k] - x[k], 3) for k in y if k in x}
        machine = out.pop("machine", None)
        if machine is not None:  # everything else on the machine (other users of these CPUs)
            out["others"] = round(max(0.0, machine - sum(out.values())), 3)
        return out


def cluster_pids(cluster: Any) -> dict[str, int]:
    pids: dict[str, int] = dict(cluster.pids())
    pids["bench"] = os.getpid()
    return pids


# --------------------------------------------------------------------------------------- operator


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


def writes_from_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in after.items():
        if key.startswith("wideep_api_writes_total{"):
            kind = key.split('kind="', 1)[1].split('"', 1)[0]
            delta = round(value - before.get(key, 0.0))
            if delta:
                out[kind] = delta
    return out


def histogram_delta(before: dict[str, float], after: dict[str, float], name: str) -> tuple[int, float]:
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return round(count), total


# --------------------------------------------------------------------------------------- bench context


@dataclass
class Bench:
    cluster: Any
    admin: Api
    user: Api  # the baseline identity: applies ParallelDeployments, and is the baseline client
    audit: Audit
    out_dir: Path
    resync_seconds: float = 2.0
    profile: bool = False

    def timeout(self, n: int) -> float:
        return 90 + 0.25 * n

    def audited(self, start: int, user: str, verbs: Iterable[str] | None = None) -> Counter[str]:
        time.sleep(0.3)  # the log backend is blocking, but give the last lines time to hit the file
        return Audit.count(self.audit.events(start), user, verbs)


async def observed_run(
    b: Bench,
    res: dict[str, Any],
    obs: Observer,
    sampler: CpuSampler,
    start: tuple[float, float, int, float],
    user: str,
    timeout: float,
) -> None:
    """Wait for a plain client's run (created, pods Ready) and record its timings, CPU and audited writes
    in ``res``; ``start`` is (t0 monotonic, t0 wall clock, audit offset, load average) taken at its POST."""
    t0, t0_wall, a0, load0 = start
    try:
        ms = await obs.wait(["created", "pods_ready"], timeout)
    finally:
        await obs.stop()
        await sampler.stop()
    res["t"] = {k: v - t0 for k, v in ms.items()}
    res["cpu_created"] = sampler.between(t0, ms["created"])
    res["cpu_ready"] = sampler.between(t0, ms["pods_ready"])
    res["top_others"] = sampler.top_others
    res["loadavg"] = [load0, loadavg()]
    res["writes_audit"] = dict(b.audited(a0, user, ("create", "patch", "update", "delete")))
    res.update(pod_windows(b.audit.events(a0), t0_wall))
    if "first" in res["pd_window"]:
        res["t"]["pd_received"] = res["pd_window"]["first"]


async def post_pdep(b: Bench, doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await b.user.ok("POST", object_path(doc), doc)
    return result


async def operator_case(b: Bench, n: int, recovery: bool, noop: bool = True) -> dict[str, Any]:
    """apply → all objects → Ready; writes; optionally no-op resyncs and a gang recovery."""
    ns = f"bench-op-{n}"
    await make_namespace(b.admin, ns)
    res: dict[str, Any] = {"n": n, "namespace": ns, "planned": planned_counts(n)}
    res["quiet_wait_s"] = await wait_quiet(b.admin, b.cluster.pids())
    profile = b.out_dir / f"operator-{n}.prof" if b.profile else None
    op = OperatorProc(b.cluster, [ns], b.out_dir, resync_seconds=b.resync_seconds, profile=profile).start()
    try:
        res["watch_open_s"] = await wait_pdep_watch(b.admin)
        await asyncio.sleep(0.5)
        res["rss_idle"] = op.memory()
        obs = await Observer(b.cluster, ns, "create", n, pd=True).start()
        pids = {**cluster_pids(b.cluster), "operator": op.pid, "observer": obs.pid}
        sampler = CpuSampler(pids).start()
        doc = pdep_doc(PD_NAME, ns, n)
        pd_body = json.dumps(doc).encode()
        # As for the baseline: the user's connections are open and the body serialised before t0.
        await asyncio.gather(*(b.user.call("GET", "/version") for _ in range(b.user.concurrency)))
        m0, a0, cpu0, load0 = op.metrics(), b.audit.offset(), op.cpu_seconds(), loadavg()
        t0, t0_wall = time.monotonic(), time.time()
        status, answer = await b.user.call("POST", object_path(doc), data=pd_body)
        if status != 201:
            raise BenchError(f"ParallelDeployment: {status} {answer.get('message', answer)}")
        try:
            ms = await obs.wait(["created", "pods_ready", "pd_ready"], b.timeout(n))
        finally:
            await obs.stop()
            await sampler.stop()
        res["t"] = {k: v - t0 for k, v in ms.items()}
        res["cpu_created"] = sampler.between(t0, ms["created"])
        res["cpu_ready"] = sampler.between(t0, ms["pd_ready"])
        res["top_others"] = sampler.top_others
        res["loadavg"] = [load0, loadavg()]
        res["operator_cpu_s"] = op.cpu_seconds() - cpu0
        await asyncio.sleep(1.0)  # the GroupReady event and the last status write
        m1 = op.metrics()
        res["writes_metrics"] = writes_from_metrics(m0, m1)
        res["connections_opened"] = round(
            m1.get("wideep_api_connections_opened_total", 0.0)
            - m0.get("wideep_api_connections_opened_total", 0.0)
        )
        res["writes_audit"] = dict(b.audited(a0, OPERATOR_USER, WRITE_VERBS))
        res["reads_audit"] = dict(b.audited(a0, OPERATOR_USER, ("get", "list")))
        res["write_window"] = Audit.window(
            b.audit.events(a0), OPERATOR_USER, t0_wall, ("patch", "create"), ("pods", "services")
        )
        if "last" in res["write_window"]:
            res["t"]["first_write"] = res["write_window"]["first"]
            res["t"]["last_write"] = res["write_window"]["last"]
        res.update(pod_windows(b.audit.events(a0), t0_wall))
        if "first" in res["pd_window"]:
            res["t"]["pd_received"] = res["pd_window"]["first"]
        res["reconciles"], res["reconcile_s"] = histogram_delta(m0, m1, "wideep_reconcile_duration_seconds")
        res["time_to_ready_metric"] = histogram_delta(m0, m1, "wideep_time_to_ready_seconds")[1]

        # No-op resyncs: the group is Ready and nothing changes; three resync periods must write nothing.
        if noop:
            a2, m2, cpu2 = b.audit.offset(), op.metrics(), op.cpu_seconds()
            window = 3 * b.resync_seconds + 0.5
            await asyncio.sleep(window)
            m3 = op.metrics()
            res["noop"] = {
                "window_s": window,
                "reconciles": histogram_delta(m2, m3, "wideep_reconcile_duration_seconds")[0],
                "reconcile_s": histogram_delta(m2, m3, "wideep_reconcile_duration_seconds")[1],
                "writes_metrics": writes_from_metrics(m2, m3),
                "writes_audit": dict(b.audited(a2, OPERATOR_USER, WRITE_VERBS)),
                "requests_audit": dict(b.audited(a2, OPERATOR_USER)),
                "operator_cpu_s": op.cpu_seconds() - cpu2,
            }
        res["rss_ready"] = op.memory()

        if recovery:
            res["recovery"] = await _recovery(b, op, ns, n)
    finally:
        rc = op.stop()
        res["operator_exit"] = rc
    if profile is not None and profile.exists():
        res["profile"] = summarize_profile(profile)
    res["cleanup_s"] = await cleanup(b.admin, ns)
    return res


def summarize_profile(path: Path, top: int = 40) -> str:
    """Write the cProfile dump's top functions (cumulative and own time) next to it; returns that path.

    cProfile measures wall time, so on a loaded machine every entry includes time spent waiting for a
    CPU, and its per-call overhead inflates functions with many small calls (copy.deepcopy)."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    text_path = path.with_suffix(".txt")
    text_path.write_text(out.getvalue())
    return str(text_path)


async def _recovery(b: Bench, op: OperatorProc, ns: str, n: int) -> dict[str, Any]:
    """Fail one rank (kwok's pod-container-running-failed stage) → all N pods new and Ready."""
    obs = await Observer(b.cluster, ns, "recovery", n, pd=True).start()
    m0, a0 = op.metrics(), b.audit.offset()
    victim = f"{PD_NAME}-{n // 2}"
    patch = {
        "metadata": {
            "labels": {"pod-container-running-failed.stage.kwok.x-k8s.io": "true"},
            "annotations": {
                "pod-container-running-failed.stage.kwok.x-k8s.io/delay": "0s",
                "pod-container-running-failed.stage.kwok.x-k8s.io/jitter-delay": "0s",
            },
        }
    }
    t_label, t_label_wall = time.monotonic(), time.time()
    await b.admin.ok(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/{victim}",
        patch,
        content_type="application/merge-patch+json",
    )
    try:
        ms = await obs.wait(["failed", "old_gone", "created", "pods_ready", "pd_ready"], b.timeout(n))
    finally:
        await obs.stop()
    t_failed = ms["failed"]
    await asyncio.sleep(1.0)
    m1 = op.metrics()
    events = b.audit.events(a0)
    t_failed_wall = t_label_wall + (t_failed - t_label)
    return {
        "deletes": Audit.window(events, OPERATOR_USER, t_failed_wall, ("delete",), ("pods",)),
        "creates": Audit.window(events, OPERATOR_USER, t_failed_wall, ("create", "patch"), ("pods",)),
        "status_writes": Audit.window(
            events, OPERATOR_USER, t_failed_wall, ("patch",), ("paralleldeployments/status",)
        ),
        "victim": victim,
        "t_from_label": {k: v - t_label for k, v in ms.items()},
        "t": {k: v - t_failed for k, v in ms.items()},
        "writes_metrics": writes_from_metrics(m0, m1),
        "writes_audit": dict(b.audited(a0, OPERATOR_USER, WRITE_VERBS)),
        "reads_audit": dict(b.audited(a0, OPERATOR_USER, ("get", "list"))),
    }


async def memory_case(b: Bench, pdeps: int = 100, ranks: int = 16) -> dict[str, Any]:
    """Operator RSS after reconciling ``pdeps`` ParallelDeployments x ``ranks`` ranks to Ready."""
    ns = "bench-mem"
    await make_namespace(b.admin, ns)
    await wait_quiet(b.admin, b.cluster.pids())
    op = OperatorProc(b.cluster, [ns], b.out_dir, resync_seconds=60.0).start()
    res: dict[str, Any] = {"pdeps": pdeps, "ranks": ranks}
    try:
        await asyncio.sleep(1.0)
        res["rss_idle"] = op.memory()
        t0 = time.monotonic()
        await asyncio.gather(*(post_pdep(b, pdep_doc(f"m{i:03d}", ns, ranks)) for i in range(pdeps)))

        async def all_ready() -> int | None:
            items = await b.admin.items(f"{PD_PATH}/namespaces/{ns}/{PLURAL}")
            ready = sum(
                1
                for pd in items
                if (pd.get("status") or {}).get("observedGeneration") == pd["metadata"]["generation"]
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (pd.get("status") or {}).get("conditions") or []
                )
            )
            return ready if ready == pdeps else None

        await wait_for(f"{pdeps} ParallelDeployments Ready", all_ready, 120 + pdeps * ranks * 0.2, 1.0)
        res["all_ready_s"] = time.monotonic() - t0
        await asyncio.sleep(2.0)
        res["rss_ready"] = op.memory()
        pods = await b.admin.items(f"/api/v1/namespaces/{ns}/pods")
        res["pods"] = len(pods)
    finally:
        op.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.controller_bench")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("observe", help="(internal) watch a namespace and print milestones")
    p.add_argument("--server", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--mode", choices=("create", "recovery"), required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--services", type=int, required=True)
    p.add_argument("--pd", action="store_true")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(_observe(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
