"""What the bench measures and how: the API server's audit log, CPU time and RSS per process (from /proc),
deltas of the operator's metrics, cProfile summaries, and the machine it all ran on."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .common import BASELINE_USER, ROOT

# --------------------------------------------------------------------------------------- memory and load


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


# --------------------------------------------------------------------------------------- audit log


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


# --------------------------------------------------------------------------------------- operator metrics and profile


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


# --------------------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """The machine, the versions and the commit the figures were taken on (the report's first lines)."""
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    from devcluster import versions
    from wideep import __version__

    pkgs = {}
    for name in ("kopf", "aiohttp", "pydantic", "prometheus_client", "matplotlib"):
        try:
            pkgs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pkgs[name] = "-"
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wideep": __version__,
        "commit": commit,
        "kubernetes": versions.KUBERNETES,
        "etcd": versions.ETCD,
        "kwok": versions.KWOK,
        "packages": pkgs,
    }
