"""``wideep preflight``: the command line. Validates before it imports torch, so a bad pod fails in a blink."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from wideep.preflight import EXIT_FAILED, EXIT_INVALID, EXIT_NO_TORCH, EXIT_OK
from wideep.preflight.config import ConfigError, Overrides, PreflightConfig, load
from wideep.preflight.network import Deadline, Log, check_interfaces

TERMINATION_LOG = "/dev/termination-log"
WATCHDOG_GRACE = 10.0  # seconds past the timeout after which the process exits whatever it is doing
TERMINATION_LIMIT = 4000  # Kubernetes keeps 4096 bytes of a termination message


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wideep preflight",
        description=(
            "Check, before vLLM starts, that every rank of this pod can join its data-parallel group: "
            "resolve and reach rank 0, rendezvous on a torch TCPStore, form a Gloo group, run vLLM's DP "
            "collectives and compare config hashes. Reads the WIDEEP_* environment the operator renders. "
            "Exit 0: all ranks joined; 1: the group failed; 2: invalid environment; 3: no torch."
        ),
    )
    p.add_argument(
        "--timeout", type=float, help="seconds for the whole preflight (default: WIDEEP_PREFLIGHT_TIMEOUT)"
    )
    p.add_argument(
        "--master-addr-override",
        metavar="ADDR",
        help="dial this address instead of WIDEEP_MASTER_ADDR (tests, benchmarks: 127.0.0.1)",
    )
    p.add_argument("--master-port", type=int, help="rendezvous port (default: WIDEEP_MASTER_PORT)")
    p.add_argument("--log-interval", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--report", metavar="PATH", help="write a JSON report of the run (timings included) here")
    p.add_argument(
        "--termination-log",
        metavar="PATH",
        default=TERMINATION_LOG,
        help="write the one-line outcome here when the file exists (Kubernetes' termination message)",
    )
    p.add_argument(
        "--validate-only", action="store_true", help="validate the environment and stop (no torch)"
    )
    return p


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    start = time.monotonic()
    started_at = time.time()
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    log = Log(start)
    try:
        cfg = load(
            env,
            Overrides(
                timeout_seconds=args.timeout,
                master_addr=args.master_addr_override,
                master_port=args.master_port,
            ),
        )
    except ConfigError as exc:
        for line in exc.problems:
            log("preflight", f"invalid environment: {line}")
        _terminate(args.termination_log, "invalid preflight environment: " + "; ".join(exc.problems))
        return EXIT_INVALID
    if args.log_interval <= 0:
        log(cfg.label, "invalid argument: --log-interval must be positive")
        return EXIT_INVALID
    log(cfg.label, _describe(cfg))
    if args.validate_only:
        return EXIT_OK
    why = check_interfaces(cfg.gloo_socket_ifname)
    if why:
        log(cfg.label, f"FAILED: {why}")
        _terminate(args.termination_log, why)
        return EXIT_INVALID

    deadline = Deadline(start, cfg.timeout_seconds)
    watchdog = _start_watchdog(deadline, log, cfg, args.termination_log)
    try:
        return _run(cfg, args, deadline, log, started_at)
    finally:
        watchdog.cancel()


def _run(
    cfg: PreflightConfig, args: argparse.Namespace, deadline: Deadline, log: Log, started_at: float
) -> int:
    t0 = time.monotonic()
    try:
        from wideep.preflight import rendezvous
    except ImportError as exc:
        text = (
            f"torch is not importable here ({exc}): run the preflight in an image with torch "
            "(vLLM's images have it; spec.preflight.image picks another) or install wideep[preflight]"
        )
        log(cfg.label, f"FAILED: {text}")
        _terminate(args.termination_log, text)
        return EXIT_NO_TORCH
    if not rendezvous.torch_supported():
        text = f"torch {rendezvous.torch_version()} is too old: the preflight needs torch >= 2.6"
        log(cfg.label, f"FAILED: {text}")
        _terminate(args.termination_log, text)
        return EXIT_NO_TORCH
    report = rendezvous.Report(
        deployment=cfg.deployment,
        pod_index=cfg.pod_index,
        group_size=cfg.group_size,
        local_ranks=list(cfg.local_ranks),
        started_at=started_at,
        torch_import_seconds=time.monotonic() - t0,
    )
    log(cfg.label, f"torch {rendezvous.torch_version()} imported in {report.torch_import_seconds:.2f}s")
    try:
        rendezvous.run(cfg, deadline, log, rendezvous.Options(log_interval=args.log_interval), report)
    except KeyboardInterrupt:
        return EXIT_FAILED
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_json(), indent=1) + "\n")
    _terminate(
        args.termination_log,
        f"passed: all {cfg.group_size} ranks joined" if report.ok else f"preflight failed: {report.message}",
    )
    return report.exit_code


def _start_watchdog(
    deadline: Deadline, log: Log, cfg: PreflightConfig, termination_log: str
) -> threading.Timer:
    """Bound the whole run even where torch blocks in C++ (an import under load, a hung connect)."""

    def fire() -> None:
        text = (
            f"the preflight overran its {cfg.timeout_seconds:g}s timeout by {WATCHDOG_GRACE:g}s "
            "and was stopped (a step blocked inside torch)"
        )
        log(cfg.label, f"FAILED: {text}")
        _terminate(termination_log, f"preflight failed: {text}")
        os._exit(EXIT_FAILED)

    timer = threading.Timer(deadline.remaining() + WATCHDOG_GRACE, fire)
    timer.daemon = True
    timer.start()
    return timer


def _describe(cfg: PreflightConfig) -> str:
    ranks = cfg.local_ranks
    mine = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"
    kind = "processes (torchrun layout)" if cfg.torchrun else "DP ranks"
    role = "hosts the rendezvous store" if cfg.hosts_store else f"dials {cfg.dial_address}:{cfg.master_port}"
    return (
        f"preflight of {cfg.deployment} pod {cfg.pod_index}: {mine} of {cfg.group_size} {kind}; {role}; "
        f"config hash {cfg.config_hash[:12]}...; timeout {cfg.timeout_seconds:g}s"
    )


def _terminate(path: str, text: str) -> None:
    if not path or not os.path.exists(path):
        return
    try:
        with open(path, "w") as f:
            f.write(text[:TERMINATION_LIMIT])
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
