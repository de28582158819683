"""The DP group, formed the way vLLM forms it, and the verdict on it. The only module that imports torch.

vLLM (v0.11.1, ``ParallelConfig.stateless_init_dp_group`` -> ``vllm/distributed/utils.py``
``stateless_init_torch_distributed_process_group``) does: a TCPStore whose server runs on DP rank 0
(``rendezvous("tcp://<master>:<port>")``), a PrefixStore over it, a Gloo ProcessGroup on the CPU built
without touching torch.distributed's global state; then every 32 steps an all_reduce MAX of an int32
("has unfinished requests") and once an all_reduce MIN of an int64 (KV-cache memory).

Here, in every rank pod, one participant (a thread) per local rank does the same, after a roll call:

1. rank 0's pod hosts the store (``is_master``); every participant appends its record (rank, pod,
   config hash, group size) to the roster key and bumps the arrival counter; the one that brings it to
   the group size sets the all-arrived key;
2. rank 0 waits on that key (or its deadline; a progress line names the missing ranks every
   --log-interval), reads the roster once and writes the verdict: missing ranks, ranks joined twice, ranks out of range, and ranks whose config hash
   or group size differs from rank 0's (rank 0's values win, as at vLLM's handshake);
3. on a good verdict every participant forms the Gloo group over a PrefixStore, runs the two
   collectives and checks their results; a store barrier follows, then the group is shut down;
4. every participant reports that it released the store; rank 0's pod then deletes the server, so
   the master port is free for vLLM, and checks that no socket is left open.

A participant that never gets a verdict (rank 0 gone, or its own deadline first) reads the roster
itself and names the missing ranks.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # c10d warns with stack traces on every wait timeout

import torch
import torch.distributed as dist
from torch.distributed import PrefixStore, TCPStore

from wideep.preflight import EXIT_FAILED, EXIT_OK
from wideep.preflight.config import PreflightConfig
from wideep.preflight.network import (
    Backoff,
    Deadline,
    Log,
    Throttle,
    open_sockets,
    port_bindable,
    probe,
    wait_reachable,
    wait_resolvable,
)
from wideep.preflight.verdict import Keys, Verdict, judge, parse_roster, short_hash

KV_BASE = 1 << 40  # the int64 each rank offers to the MIN all-reduce is KV_BASE + rank
RELEASE_GRACE = 5.0  # seconds rank 0's pod waits past its deadline for the others to let go of the store


@dataclass(frozen=True)
class Options:
    log_interval: float = 10.0
    """Seconds between progress lines while waiting."""


@dataclass
class RankResult:
    rank: int
    ok: bool = False
    message: str = ""
    connected_at: float | None = None
    arrived_at: float | None = None
    verdict_at: float | None = None
    group_at: float | None = None
    collectives_at: float | None = None
    released_at: float | None = None


@dataclass
class Report:
    deployment: str
    pod_index: int
    group_size: int
    local_ranks: list[int]
    started_at: float
    ok: bool = False
    exit_code: int = EXIT_FAILED
    message: str = ""
    torch_version: str = ""
    torch_import_seconds: float = 0.0
    reachable_at: float | None = None
    ended_at: float | None = None
    port_free: bool | None = None
    open_sockets: int | None = None
    ranks: list[RankResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class PreflightError(Exception):
    """A failed step, with the message the rank reports."""


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | dist.DistStoreError) or "timeout" in str(exc).lower()


def _td(seconds: float) -> timedelta:
    return timedelta(seconds=max(0.05, seconds))


# ------------------------------------------------------------------------------------- participant


class Participant:
    """One local rank: joins the roll call, then the Gloo group, then runs vLLM's DP collectives."""

    def __init__(
        self,
        cfg: PreflightConfig,
        rank: int,
        deadline: Deadline,
        log: Log,
        opts: Options,
        server: Any | None,
        reserve: float,
    ) -> None:
        self.cfg = cfg
        self.rank = rank
        self.deadline = deadline
        self.log = log
        self.opts = opts
        self.server = server
        self.reserve = reserve
        self.keys = Keys(cfg.deployment)
        self.who = f"rank {rank}/{cfg.group_size}"
        self.result = RankResult(rank)
        self.reports_progress = rank == cfg.local_ranks[0]

    def run(self) -> None:
        store: Any = None
        try:
            store = self._connect()
            self._arrive(store)
            verdict = self._coordinate(store) if self.rank == 0 else self._await_verdict(store)
            self.result.verdict_at = time.time()
            if not verdict.ok:
                raise PreflightError(verdict.message)
            self._form_group_and_reduce(store)
            self.result.ok = True
        except PreflightError as exc:
            self.result.message = str(exc)
        except Exception as exc:  # torch raises RuntimeError subclasses with useful text
            self.result.message = f"{type(exc).__name__}: {exc}"
        finally:
            if store is not None and self.result.arrived_at is not None:
                self._release(store)  # rank 0's pod keeps the store up until every arrival let go
            store = None
            self.server = None

    # -- 1. the store

    def _connect(self) -> Any:
        if self.server is not None and self.rank == 0:
            self.result.connected_at = time.time()
            return self.server
        host = self.cfg.server_address if self.cfg.hosts_store else self.cfg.dial_address
        try:
            store = TCPStore(
                host,
                self.cfg.master_port,
                None,
                False,
                _td(self.deadline.remaining()),
                wait_for_workers=False,
            )
        except Exception as exc:
            raise PreflightError(
                f"cannot connect to rank 0's store at {host}:{self.cfg.master_port}: {exc}; "
                f"missing: {self.cfg.describe_ranks(self._pod0_ranks())}"
            ) from None
        self.result.connected_at = time.time()
        return store

    def _pod0_ranks(self) -> list[int]:
        return [0] if self.cfg.torchrun else list(range(self.cfg.dp_size_local))

    # -- 2. roll call

    def _record(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "pod": self.cfg.pod_index,
            "hash": self.cfg.config_hash,
            "group_size": self.cfg.group_size,
            "deployment": self.cfg.deployment,
            "host": self.cfg.host_ip or socket.gethostname(),
            "pid": os.getpid(),
            "t": time.time(),
        }

    def _arrive(self, store: Any) -> None:
        store.append(self.keys.roster, json.dumps(self._record(), separators=(",", ":")) + "\n")
        n = int(store.add(self.keys.count, 1))
        if n >= self.cfg.group_size:
            store.set(self.keys.all_arrived, "1")
        self.result.arrived_at = time.time()
        self.log(self.who, f"joined the rendezvous at {self._where()} ({n}/{self.cfg.group_size} so far)")

    def _where(self) -> str:
        host = self.cfg.server_address if self.cfg.hosts_store else self.cfg.dial_address
        return f"{host}:{self.cfg.master_port}"

    def _roster(self, store: Any) -> list[dict[str, Any]]:
        if not store.check([self.keys.roster]):
            return []
        return parse_roster(store.get(self.keys.roster))

    def _coordinate(self, store: Any) -> Verdict:
        """Rank 0: wait for the roll call to complete (or the deadline), then judge and publish."""
        n = self.cfg.group_size
        while True:
            joined = int(store.add(self.keys.count, 0))
            left = self.deadline.remaining(self.reserve)
            if joined >= n or left <= 0:
                break
            try:  # the last to arrive sets all-arrived: no polling delay
                store.wait([self.keys.all_arrived], _td(min(left, self.opts.log_interval)))
            except Exception as exc:
                if not _is_timeout(exc):
                    raise
                present = {rec.get("rank") for rec in self._roster(store)}
                missing = [r for r in range(n) if r not in present]
                self.log(
                    self.who,
                    f"{len(present & set(range(n)))}/{n} ranks joined after {self.deadline.elapsed():.1f}s; "
                    f"waiting for {self.cfg.describe_ranks(missing)}",
                )
            else:
                time.sleep(0.02)  # set early by a rank that believes in a smaller group: judge at the count
        reference = self._record()
        verdict = judge(self.cfg, self._roster(store), reference)
        store.set(self.keys.verdict, verdict.dumps())
        return verdict

    def _await_verdict(self, store: Any) -> Verdict:
        throttle = Throttle(self.opts.log_interval)
        throttle()
        while True:
            left = self.deadline.remaining()
            if left <= 0:
                break
            try:
                store.wait([self.keys.verdict], _td(min(left, self.opts.log_interval)))
                return Verdict.loads(store.get(self.keys.verdict))
            except Exception as exc:
                if not _is_timeout(exc):
                    raise PreflightError(
                        f"lost the connection to rank 0's store at {self._where()} ({exc}); rank 0 exited "
                        f"or restarted: see the log of {self.cfg.describe_ranks([0])}"
                    ) from None
            if self.reports_progress and throttle() and not self.deadline.expired():
                joined = int(store.add(self.keys.count, 0))
                self.log(
                    self.who,
                    f"waiting for the other ranks: {joined}/{self.cfg.group_size} joined after "
                    f"{self.deadline.elapsed():.1f}s",
                )
        # No verdict from rank 0 in time: name the missing ranks from the roster ourselves.
        try:
            roster = self._roster(store)
        except Exception as exc:
            raise PreflightError(
                f"no verdict from rank 0 within {self.cfg.timeout_seconds:g}s and its store is gone ({exc})"
            ) from None
        present = {rec.get("rank") for rec in roster}
        missing = [r for r in range(self.cfg.group_size) if r not in present]
        if missing:
            raise PreflightError(
                f"{self.cfg.group_size - len(missing)} of {self.cfg.group_size} ranks joined within "
                f"{self.cfg.timeout_seconds:g}s; missing: {self.cfg.describe_ranks(missing)}"
            )
        raise PreflightError(
            f"every rank joined, but rank 0 gave no verdict within {self.cfg.timeout_seconds:g}s"
        )

    # -- 3. the Gloo group and vLLM's two DP collectives

    def _form_group_and_reduce(self, store: Any) -> None:
        n = self.cfg.group_size
        t0 = time.monotonic()
        prefix = PrefixStore(self.keys.gloo_prefix, store)
        try:
            pg = new_gloo_group(prefix, self.rank, n, _td(self.deadline.remaining()))
        except Exception as exc:
            raise PreflightError(f"the Gloo group did not form: {exc}") from None
        self.result.group_at = time.time()
        try:
            # ParallelConfig.has_unfinished_dp: int32, MAX (an OR). Only the last rank has work.
            flag = torch.tensor([1 if self.rank == n - 1 else 0], dtype=torch.int32, device="cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=pg)
            # ParallelConfig.sync_kv_cache_memory_size: int64, MIN. Rank 0 offers the least.
            memory = torch.tensor([KV_BASE + self.rank], dtype=torch.int64, device="cpu")
            dist.all_reduce(memory, op=dist.ReduceOp.MIN, group=pg)
            got = (int(flag.item()), int(memory.item()))
            if got != (1, KV_BASE):
                raise PreflightError(
                    f"DP collectives returned {got}, expected (1, {KV_BASE}): a rank reduced other data"
                )
            self.result.collectives_at = time.time()
            c = int(store.add(self.keys.done, 1))
            if c >= n:
                store.set(self.keys.all_done, "1")
            try:
                store.wait([self.keys.all_done], _td(self.deadline.remaining() + RELEASE_GRACE))
            except Exception as exc:
                raise PreflightError(f"a rank did not finish the DP collectives: {exc}") from None
        finally:
            shutdown_group(pg)
            del pg, prefix
        self.log(
            self.who,
            f"all {n} ranks joined in {self._joined_seconds():.2f}s; Gloo group and DP collectives "
            f"(all_reduce MAX int32, MIN int64) ok in {time.monotonic() - t0:.2f}s",
        )

    def _joined_seconds(self) -> float:
        if self.result.arrived_at is None or self.result.verdict_at is None:
            return 0.0
        return max(0.0, self.result.verdict_at - self.result.arrived_at)

    def _release(self, store: Any) -> None:
        with contextlib.suppress(Exception):
            store.add(self.keys.released, 1)
        self.result.released_at = time.time()


MIN_TORCH = (2, 6)  # ProcessGroup(store, rank, size) and _set_default_backend, as vLLM uses them from 2.6


def torch_version() -> str:
    return str(torch.__version__)


def torch_supported() -> bool:
    try:
        major, minor = (int(p) for p in torch_version().split("+")[0].split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= MIN_TORCH


def new_gloo_group(store: Any, rank: int, size: int, timeout: timedelta) -> Any:
    """A Gloo ProcessGroup outside torch.distributed's global state (as vLLM's init_gloo_process_group)."""
    from torch.distributed.distributed_c10d import ProcessGroup, ProcessGroupGloo

    pg = ProcessGroup(store, rank, size)
    backend = ProcessGroupGloo(store, rank, size, timeout=timeout)
    gloo = ProcessGroup.BackendType.GLOO
    pg._set_default_backend(gloo)
    backend._set_sequence_number_for_group()
    pg._register_backend(torch.device("cpu"), gloo, backend)
    return pg


def shutdown_group(pg: Any) -> None:
    """Close the group's sockets now rather than at garbage collection."""
    shutdown = getattr(pg, "shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):
            shutdown()


# ------------------------------------------------------------------------------------- the pod


def start_server(cfg: PreflightConfig, deadline: Deadline, log: Log, opts: Options) -> Any:
    """Rank 0's pod: the TCPStore server on the master port (retrying while another process holds it)."""
    backoff = Backoff(initial=0.2, cap=2.0)
    throttle = Throttle(opts.log_interval)
    while True:
        try:
            return TCPStore(
                cfg.server_address,
                cfg.master_port,
                None,
                True,
                _td(deadline.remaining()),
                wait_for_workers=False,
            )
        except Exception as exc:
            text = str(exc)
            if "EADDRINUSE" not in text and "address already in use" not in text.lower():
                raise PreflightError(
                    f"cannot start the rendezvous store on port {cfg.master_port}: {exc}"
                ) from None
            if deadline.expired():
                raise PreflightError(
                    f"port {cfg.master_port} (spec.parallelConfig.dataParallelMasterPort) stayed in use "
                    f"on this pod for {deadline.seconds:g}s"
                ) from None
            if throttle():
                log(cfg.label, f"port {cfg.master_port} is in use on this pod; retrying")
            backoff.sleep(deadline)


def run(cfg: PreflightConfig, deadline: Deadline, log: Log, opts: Options, report: Report) -> Report:
    """The whole preflight of one pod; fills and returns ``report``."""
    who = cfg.label
    report.torch_version = torch_version()
    sockets_before = open_sockets()
    n = cfg.group_size
    # Rank 0 gives its verdict a little before the deadline, so that the others can read it in time.
    reserve = min(2.0, 0.1 * cfg.timeout_seconds)
    server: Any = None
    try:
        if cfg.dial_override:
            log(who, f"dialling {cfg.dial_override} instead of {cfg.master_addr} (--master-addr-override)")
        log(who, f"waiting for master {cfg.dial_address} to be resolvable")
        addrs = wait_resolvable(cfg.dial_address, cfg.master_port, deadline, log, who, opts.log_interval)
        if cfg.hosts_store:
            if cfg.host_ip and cfg.host_ip not in addrs and not cfg.dial_override:
                log(
                    who,
                    f"warning: {cfg.dial_address} resolves to {', '.join(addrs)}, not this pod's IP "
                    f"{cfg.host_ip} (a stale DNS record?): the other ranks may dial the wrong pod",
                )
            server = start_server(cfg, deadline, log, opts)
            log(who, f"hosting the rendezvous store on port {cfg.master_port} for {n} ranks")
            why = probe(cfg.dial_address, cfg.master_port, min(2.0, deadline.remaining()))
            if why is not None:
                log(
                    who,
                    f"warning: this pod cannot reach its own store at {cfg.dial_address}:{cfg.master_port} ({why})",
                )
        else:
            wait_reachable(cfg.dial_address, cfg.master_port, deadline, log, who, opts.log_interval)
    except (TimeoutError, PreflightError) as exc:
        missing = [0] if cfg.torchrun else list(range(cfg.dp_size_local))
        text = str(exc)
        if not cfg.hosts_store:
            text += f"; missing: {cfg.describe_ranks(missing)}, which hosts the rendezvous (check that pod's status and log)"
        report.message = text
        report.ranks = [RankResult(r, message=text) for r in cfg.local_ranks]
        server = None
        return _finish(cfg, report, log, deadline, sockets_before)
    report.reachable_at = time.time()

    participants = [Participant(cfg, r, deadline, log, opts, server, reserve) for r in cfg.local_ranks]
    threads = [threading.Thread(target=p.run, name=f"rank-{p.rank}", daemon=True) for p in participants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.ranks = [p.result for p in participants]
    del participants, threads
    if server is not None:
        _wait_released(server, Keys(cfg.deployment), deadline, ok=all(r.ok for r in report.ranks))
    server = None  # the last reference: the store's server closes its port here
    return _finish(cfg, report, log, deadline, sockets_before)


def _wait_released(server: Any, keys: Keys, deadline: Deadline, ok: bool) -> None:
    """Keep the store up until every participant that joined has let go of it (bounded)."""
    grace = max(deadline.remaining(), RELEASE_GRACE) if ok else deadline.remaining() + 1.0
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            joined = int(server.add(keys.count, 0))
            released = int(server.add(keys.released, 0))
        except Exception:
            return
        if released >= joined:
            return
        time.sleep(0.02)


def _finish(
    cfg: PreflightConfig, report: Report, log: Log, deadline: Deadline, sockets_before: int | None
) -> Report:
    who = cfg.label

    def check_release() -> None:
        if cfg.hosts_store:
            report.port_free = port_bindable(cfg.master_port)
        after = open_sockets()
        if after is not None and sockets_before is not None:
            report.open_sockets = max(0, after - sockets_before)

    check_release()
    if report.port_free is False or report.open_sockets:
        gc.collect()  # a reference cycle may still hold a store or a group: collect it, then look again
        check_release()
    report.ended_at = time.time()
    failed = [r for r in report.ranks if not r.ok]
    report.ok = bool(report.ranks) and not failed
    report.exit_code = EXIT_OK if report.ok else EXIT_FAILED
    if not report.ok and not report.message:
        messages = list(dict.fromkeys(r.message for r in failed))
        report.message = (
            messages[0] if len(messages) == 1 else " | ".join(f"rank {r.rank}: {r.message}" for r in failed)
        )
    released = []
    if report.port_free is not None:
        released.append(f"port {cfg.master_port} {'free again' if report.port_free else 'STILL IN USE'}")
    if report.open_sockets is not None:
        released.append(f"{report.open_sockets} socket(s) left open")
    tail = f" ({'; '.join(released)})" if released else ""
    if report.ok:
        log(
            who,
            f"passed in {deadline.elapsed():.2f}s: all {cfg.group_size} ranks joined, same config hash "
            f"{short_hash(cfg.config_hash)}, DP collectives ok{tail}",
        )
    else:
        if len(report.ranks) > 1:
            for r in failed:
                log(f"rank {r.rank}/{cfg.group_size}", f"FAILED: {r.message}")
        log(who, f"FAILED after {deadline.elapsed():.2f}s: {report.message}{tail}")
    return report
