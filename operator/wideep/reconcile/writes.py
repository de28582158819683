"""How a pass's decision is written: pure choices the reconciler acts on.

- The status: written at once, held back (a new group's first status while it comes up), or put off (progress
  figures of a group coming up, at most every ``progress_seconds``). The figures behind these choices are in
  docs/benchmarks.md; the rules are in docs/architecture.md.
- Pod creates right after the previous generation's pods vanished wait for a settle window, so a late
  delete by name from another actor cannot hit the new pod that takes the same name.
- What status is written after the writes: the created generation once every create succeeded, and the
  API server's refusals in the Progressing message.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from wideep.api import constants as c
from wideep.api.models import Condition
from wideep.reconcile.decide import MESSAGE_LIMIT, Decision

# Reasons of a group on its way up: moving from one to the next is progress, like the counts.
COMING_UP = frozenset({c.REASON_CREATING, c.REASON_WAITING_FOR_RANKS, c.REASON_RANKS_NOT_READY})


def _essence(status: dict[str, Any]) -> dict[str, Any]:
    """The status without its progress figures: ready counts, each rank's phase, node, readiness and
    restarts, condition messages, and the step between two reasons of a group coming up (creating pods,
    waiting for ranks). What remains (conditions' status and other reasons, generations, gang state,
    failures) is what other clients and the next pass act on."""
    out = {k: v for k, v in status.items() if k not in ("ready", "readyRanks", "ranks", "conditions")}
    out["ranks"] = [
        (r.get("pod"), r.get("rank"), r.get("ranks"), r.get("lastFailure")) for r in status.get("ranks") or []
    ]
    out["conditions"] = [
        (
            cd.get("type"),
            cd.get("status"),
            "coming up" if cd.get("reason") in COMING_UP else cd.get("reason"),
            cd.get("observedGeneration"),
        )
        for cd in status.get("conditions") or []
    ]
    return out


def progress_only(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether two statuses differ in progress figures only (see _essence)."""
    return _essence(old or {}) == _essence(new)


def coming_up(status: dict[str, Any]) -> bool:
    """A valid group on its way up with nothing wrong: Ready=False for a reason of COMING_UP (creating pods,
    waiting for ranks), not Degraded. Unschedulable pods, failures and invalid specs are not."""
    conds = {cd.get("type"): cd for cd in status.get("conditions") or []}
    ready, valid, degraded = (conds.get(t) or {} for t in (c.COND_READY, c.COND_VALID, c.COND_DEGRADED))
    return (
        valid.get("status") == "True"
        and degraded.get("status") != "True"
        and ready.get("status") == "False"
        and ready.get("reason") in COMING_UP
    )


class StatusWrite(enum.Enum):
    NONE = "none"  # nothing changed
    NOW = "now"
    HOLD_FIRST = "hold-first"  # a new group's first status, held back while the group comes up
    LATER = "later"  # progress figures only, written after the wait


@dataclass(frozen=True)
class StatusChoice:
    write: StatusWrite
    after: float = 0.0  # for HOLD_FIRST and LATER: seconds until the pass that may write it


def choose_status_write(
    stored: dict[str, Any] | None,
    status: dict[str, Any],
    *,
    held_since: float | None,
    last_written: float | None,
    now: float,
    progress_seconds: float,
) -> StatusChoice:
    """When to write ``status`` (``stored``: the status the object carries, or the held one).

    ``held_since``: monotonic time of the pass that first held back this group's first status (None: none is
    held); ``last_written``: monotonic time of the group's last status write (None: none by this process).
    Progress figures of a group coming up change with every pod event, and at 1024 ranks a status write is
    ~100 kB for the API server, etcd and every watcher: they are written at most every ``progress_seconds``.
    A new group's first status counts as progress too while the group comes up: it is written once the group
    is Ready, or ``progress_seconds`` after the pass that first held it, whichever comes first."""
    if held_since is None and (stored or {}) == status:
        return StatusChoice(StatusWrite.NONE)
    first = held_since is not None or (last_written is None and not stored)
    held = now - held_since if held_since is not None else 0.0
    if first and coming_up(status) and held < progress_seconds:
        return StatusChoice(StatusWrite.HOLD_FIRST, progress_seconds - held)
    since = now - last_written if last_written is not None else float("inf")
    if since < progress_seconds and progress_only(stored, status):
        return StatusChoice(StatusWrite.LATER, progress_seconds - since)
    return StatusChoice(StatusWrite.NOW)


def settle_wait(last_pod_gone: float | None, now: float, settle_seconds: float) -> float:
    """Seconds pod creates must still wait because pods of the group vanished moments ago (0: none)."""
    if last_pod_gone is None:
        return 0.0
    return max(0.0, settle_seconds - (now - last_pod_gone))


def creates_put_off(d: Decision) -> Decision:
    """The decision without its pod creates and applies (the settle window): Services are still written, and
    the status no longer records the generation as filled."""
    return dataclasses.replace(d, apply=[o for o in d.apply if o["kind"] != "Pod"], fills_generation=None)


def status_after_writes(d: Decision, errors: list[str]) -> dict[str, Any]:
    """The status to write once the pass's writes are done: with every create answered, the generation they
    filled is recorded (sparing the next pass a write); refused writes are named in Progressing."""
    filled = d.fills_generation is not None and not errors
    if not filled and not errors:
        return d.status
    st = d.state.model_copy()
    if filled:
        assert d.fills_generation is not None
        st.created_generation = d.fills_generation
    if errors:
        msg = errors[0] + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
        text = f"the API server refused planned writes, retrying: {msg}"[:MESSAGE_LIMIT]
        st.conditions = [
            _with_message(cd, text) if cd.type == c.COND_PROGRESSING else cd for cd in st.conditions
        ]
    return st.model_dump(mode="json", by_alias=True, exclude_none=True)


def _with_message(cond: Condition, message: str) -> Condition:
    return cond.model_copy(update={"message": message})
