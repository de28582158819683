"""The roll call's keys and rank 0's verdict on it. Pure: no torch, so it is tested without it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from wideep.preflight.config import PreflightConfig


def short_hash(h: str) -> str:
    return h[:12] + "..."


class Keys:
    """Store keys of one deployment's rendezvous."""

    def __init__(self, deployment: str) -> None:
        p = f"wideep-preflight/{deployment}/"
        self.gloo_prefix = p + "gloo"
        self.roster = p + "roster"
        self.count = p + "count"
        self.all_arrived = p + "all-arrived"
        self.verdict = p + "verdict"
        self.done = p + "done"
        self.all_done = p + "all-done"
        self.released = p + "released"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    joined: int
    message: str
    missing: list[int] = field(default_factory=list)
    mismatched: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def loads(raw: bytes) -> Verdict:
        data = json.loads(raw)
        return Verdict(**data)


def _carry(ranks: list[int]) -> str:
    return "carries" if len(ranks) == 1 else "carry"


def parse_roster(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for line in raw.decode(errors="replace").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def judge(cfg: PreflightConfig, roster: list[dict[str, Any]], reference: dict[str, Any]) -> Verdict:
    """Rank 0's verdict on the roll call. ``reference`` is rank 0's own record: its values win."""
    n = cfg.group_size
    by_rank: dict[int, list[dict[str, Any]]] = {}
    strangers: list[dict[str, Any]] = []
    for rec in roster:
        r = rec.get("rank")
        if isinstance(r, int) and 0 <= r < n:
            by_rank.setdefault(r, []).append(rec)
        else:
            strangers.append(rec)
    missing = [r for r in range(n) if r not in by_rank]
    duplicates = sorted(r for r, recs in by_rank.items() if len(recs) > 1)
    problems: list[str] = []
    if missing:
        problems.append(
            f"{len(by_rank)} of {n} ranks joined within {cfg.timeout_seconds:g}s; "
            f"missing: {cfg.describe_ranks(missing)}"
        )
    if duplicates:
        problems.append(
            f"{cfg.describe_ranks(duplicates)} joined more than once: two pods claim the same rank "
            f"(hosts: {', '.join(sorted({str(rec.get('host')) for r in duplicates for rec in by_rank[r]}))})"
        )
    if strangers:
        claimed = sorted({str(rec.get("rank")) for rec in strangers})
        problems.append(
            f"{len(strangers)} participant(s) claim ranks outside 0-{n - 1} ({', '.join(claimed[:16])}); "
            f"they believe the group is larger than rank 0's {n} ranks"
        )
    mismatched: set[int] = set()
    by_hash: dict[str, list[int]] = {}
    for r, recs in by_rank.items():
        for rec in recs:
            if rec.get("hash") != reference["hash"]:
                by_hash.setdefault(str(rec.get("hash")), []).append(r)
                mismatched.add(r)
    for h, ranks in sorted(by_hash.items(), key=lambda kv: min(kv[1])):
        problems.append(
            f"config hash mismatch: {cfg.describe_ranks(ranks)} {_carry(ranks)} {short_hash(h)} but rank 0 carries "
            f"{short_hash(reference['hash'])}; every rank must be started from the same spec "
            f"(vLLM would refuse them at its handshake)"
        )
    for what in ("group_size", "deployment"):
        odd = sorted({r for r, recs in by_rank.items() for rec in recs if rec.get(what) != reference[what]})
        if odd:
            values = sorted({str(rec.get(what)) for r in odd for rec in by_rank[r]})
            problems.append(
                f"{cfg.describe_ranks(odd)} {_carry(odd)} {what.replace('_', ' ')} {', '.join(values)}, "
                f"rank 0 carries {reference[what]}"
            )
            mismatched.update(odd)
    return Verdict(
        ok=not problems,
        joined=len(by_rank),
        message="; ".join(problems) or f"all {n} ranks joined",
        missing=missing,
        mismatched=sorted(mismatched),
        duplicates=duplicates,
    )
