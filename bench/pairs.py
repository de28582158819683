"""Pairs of runs (baseline and operator, next to each other in time): how many per N, which count, and the
medians and ratios reported from them."""

from __future__ import annotations

import os
import statistics
from typing import Any


def default_pairs(n: int) -> int:
    """Pairs of runs per N: a small group is done in ~0.1 s, where a few ms of scheduling noise move one
    pair's ratio by 10-50%, and small pairs are cheap, so small N get more pairs; odd, so the median is one
    pair's."""
    # Measured spread: per-pair Ready ratios at N=8 from 0.7 to 2.0 (medians of 16-21 pairs 1.18-1.31 over
    # five runs); per-pair created ratios at N=64 from 0.43 to 1.63 in one run; at N=256 and 1024 one pair
    # still swings by 20-50% between runs, a median of three by 0.15. Cost per pair: ~13 s at N=8, ~20 s at
    # 64, ~30 s at 256, ~75 s at 1024.
    return 31 if n <= 8 else 15 if n <= 64 else 9 if n <= 256 else 5


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run (the one with the median Ready time, for the details), with ``t`` replaced by the
    per-milestone median over all runs."""
    key = "pd_ready" if "pd_ready" in runs[0]["t"] else "pods_ready"
    ordered = sorted(runs, key=lambda r: r["t"][key])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        chosen["all_runs_t"] = [r["t"] for r in runs]
        chosen["t"] = {
            k: statistics.median(r["t"][k] for r in runs)
            for k in runs[0]["t"]
            if all(k in r["t"] for r in runs)
        }
    return chosen


def others_share(run: dict[str, Any]) -> float:
    """Share of the machine's CPUs that processes outside the bench used from t0 to Ready."""
    cpu = run.get("cpu_ready") or {}
    t = run["t"].get("pd_ready", run["t"].get("pods_ready"))
    return float(cpu.get("others", 0.0)) / (t * (os.cpu_count() or 1)) if t else 0.0


def clean_pairs(
    op_runs: list[dict[str, Any]], base_runs: list[dict[str, Any]], limit: float
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (o, bb)
        for o, bb in zip(op_runs, base_runs, strict=True)
        if others_share(o) <= limit and others_share(bb) <= limit
    ]


def select_pairs(
    op_runs: list[dict[str, Any]], base_runs: list[dict[str, Any]], limit: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pairs to report: those in which other processes on the machine stayed under ``limit`` of
    the CPUs, or else the least disturbed pair."""
    pairs = clean_pairs(op_runs, base_runs, limit)
    if not pairs:
        pairs = [
            min(
                zip(op_runs, base_runs, strict=True),
                key=lambda p: max(others_share(p[0]), others_share(p[1])),
            )
        ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def ratios(op_runs: list[dict[str, Any]], base_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repetitions of the per-repetition ratio (each operator run against the baseline run
    next to it in time, so that slow drifts of the machine's load cancel)."""
    pairs = list(zip(op_runs, base_runs, strict=True))
    created = [o["t"]["created"] / b["t"]["created"] for o, b in pairs]
    ready = [o["t"]["pd_ready"] / b["t"]["pods_ready"] for o, b in pairs]
    written = [
        o["t"]["last_write"] / b["t"]["last_write"]
        for o, b in pairs
        if "last_write" in o["t"] and "last_write" in b["t"]
    ]
    return {
        "created": statistics.median(created),
        "ready": statistics.median(ready),
        "written": statistics.median(written) if written else None,
        "created_per_rep": created,
        "ready_per_rep": ready,
        "written_per_rep": written,
    }
