"""The observer: a process of its own (``python -m bench.controller_bench observe``) that lists and watches one
namespace and prints the moments (CLOCK_MONOTONIC, shared by every process on the machine) when milestones
are reached; ``Observer`` is the bench's side of it. Measuring from outside both contenders keeps the
observer's CPU out of either one's process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import time
from collections.abc import Iterable
from typing import Any

from .common import PD_PATH, PLURAL, ROOT, BenchError, child_env
from .objects import planned_counts


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


async def observe(args: argparse.Namespace) -> None:
    """The observer process: list and watch the namespace, print each milestone once as a JSON line."""
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
