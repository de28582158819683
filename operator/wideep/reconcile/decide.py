"""Decide: (ParallelDeployment, observed children, now) → writes to make and the new status. Pure.

The gang state lives in the object's status (``groupGeneration``, ``createdGeneration``,
``groupRestarts``, ...), so an operator restart resumes exactly where the last one stopped.

Group generations: every rank pod carries the generation it was created for. A restart or a
replacement bumps the generation; pods of older generations are deleted, and the new
generation is created only when no pod of an older one is left, so old and new ranks never
run together (a mixed DP group hangs vLLM, docs/vllm-wiring.md §6).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from wideep.api import constants as c
from wideep.api import derived
from wideep.api.models import (
    Condition,
    Derived,
    Failure,
    GroupChange,
    ParallelDeployment,
    ParallelDeploymentStatus,
    RankStatus,
)
from wideep.api.validate import Verdict
from wideep.planning.planner import HASH_LABEL_CHARS, GroupPlan, format_ranks, plan
from wideep.reconcile.pods import (
    is_lost,
    is_rank_pod_name,
    is_terminating,
    pod_counts_ready,
    pod_generation,
    restart_count,
    stopped_containers,
    unschedulable_message,
)

MESSAGE_LIMIT = 512


@dataclass(frozen=True)
class EventSpec:
    reason: str
    message: str
    warning: bool = False


@dataclass
class Decision:
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, uid)
    events: list[EventSpec] = field(default_factory=list)
    # The decided status, typed, and as written (camelCase JSON): the reconciler reads the first, writes the second.
    state: ParallelDeploymentStatus = field(default_factory=ParallelDeploymentStatus)
    status: dict[str, Any] = field(default_factory=dict)
    requeue_after: float | None = None
    plan: GroupPlan | None = None
    became_ready: bool = False
    restarted: bool = False
    # This pass creates every missing pod of this group generation: once all those creates succeed, the
    # status written after them may already record it (createdGeneration), sparing the next pass a write.
    fills_generation: int | None = None
    # The group generation moved on in this pass (a gang restart or a replacement).
    new_generation: bool = False

    @property
    def deletes_a_generation(self) -> bool:
        """A gang restart or replacement of a group that has pods: its deletes must follow the status write
        that records the new generation."""
        return self.new_generation and any(kind == "Pod" for kind, _, _ in self.delete)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str | None) -> dt.datetime | None:
    if not s:
        return None
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def failure_of(pod: dict[str, Any], now: dt.datetime, reason_if_missing: str) -> Failure:
    """The forensics of a lost rank pod: the termination state of the container that stopped (a non-zero
    exit first, then a serving container's exit 0), else of the last terminated run of one that restarted,
    else the pod's own reason. The message is the container's termination message: with the
    terminationMessagePolicy FallbackToLogsOnError the planner sets, the last log lines of a failed one."""
    st = pod.get("status") or {}
    meta = pod["metadata"]
    best: Failure | None = None
    stopped = sorted(stopped_containers(pod), key=lambda cs_term: cs_term[1].get("exitCode") in (None, 0))
    candidates = stopped + [
        (cs, term)
        for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])
        if (term := (cs.get("lastState") or {}).get("terminated"))
    ]
    if candidates:
        cs, term = candidates[0]
        code = term.get("exitCode")
        best = Failure(
            reason=str(term.get("reason") or ("Completed" if code == 0 else "Error")),
            exit_code=code,
            message=str(term.get("message") or "")[-MESSAGE_LIMIT:],
            container=cs.get("name"),
        )
    if best is None:
        best = Failure(
            reason=str(st.get("reason") or reason_if_missing),
            message=str(st.get("message") or "")[:MESSAGE_LIMIT],
        )
    best.time = iso(now)
    best.pod = meta.get("name")
    best.group_generation = pod_generation(pod)
    return best


def exited(f: Failure) -> bool:
    """A rank that ended on its own with exit code 0 (or a Succeeded pod): it exited, it did not fail."""
    return f.exit_code == 0 or (f.exit_code is None and f.reason in ("Completed", "Succeeded"))


def lost_verb(f: Failure, missing: bool) -> str:
    """How a rank was lost, for the restart reason and the event: 'is gone', 'was deleted', 'exited (...)' or
    'failed (...)'."""
    if missing:
        return "is gone"
    if f.reason == "Deleted":
        return "was deleted"
    if exited(f):
        code = "exit code 0" if f.exit_code == 0 else f.reason
        return f"exited ({code}{', container ' + f.container if f.container else ''})"
    return f"failed ({f.reason})"


def _describe(f: Failure) -> str:
    parts = [f.reason or "Failed"]
    if f.exit_code is not None:
        parts.append(f"exit code {f.exit_code}")
    if f.container:
        parts.append(f"container {f.container}")
    text = ", ".join(parts)
    if f.message:
        text += f": {f.message.strip().splitlines()[-1][:200] if f.message.strip() else ''}"
    return text


# ----------------------------------------------------------------------------------- conditions


def set_condition(
    prev: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
) -> Condition:
    st: Literal["True", "False"] = "True" if status else "False"
    message = message[:MESSAGE_LIMIT]
    for old in prev:
        if old.type == type_:
            ltt = old.last_transition_time if old.status == st else iso(now)
            return Condition(
                type=type_,
                status=st,
                reason=reason,
                message=message,
                last_transition_time=ltt,
                observed_generation=generation,
            )
    return Condition(
        type=type_,
        status=st,
        reason=reason,
        message=message,
        last_transition_time=iso(now),
        observed_generation=generation,
    )


def _cond(conds: list[Condition], type_: str) -> Condition | None:
    return next((x for x in conds if x.type == type_), None)


def backoff_seconds(restarts_done: int, base: int, cap: int) -> float:
    """Wait before restart number restarts_done+1: none for the first, then base·2^(k-1), capped."""
    if restarts_done <= 0:
        return 0.0
    return float(min(cap, base * (2 ** (restarts_done - 1))))


def _pod_differs(observed: dict[str, Any], desired: dict[str, Any]) -> bool:
    """In-place differences the operator applies: labels and annotations (the spec is immutable)."""
    om, dm = observed["metadata"], desired["metadata"]
    for key in ("labels", "annotations"):
        have = om.get(key) or {}
        if any(have.get(k) != v for k, v in (dm.get(key) or {}).items()):
            return True
    return False


def _service_differs(observed: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether the operator's own fields of a Service drifted. Fields another manager added (an extra port,
    a label) are theirs under server-side apply and do not count: comparing exactly would make the
    operator write on every pass without ever converging."""
    os_, ds = observed.get("spec") or {}, desired["spec"]
    selector = os_.get("selector") or {}
    if any(selector.get(k) != v for k, v in ds["selector"].items()):
        return True
    have_ports = {(p.get("name"), p.get("port"), p.get("targetPort")) for p in os_.get("ports") or []}
    if any((p["name"], p["port"], p["targetPort"]) not in have_ports for p in ds["ports"]):
        return True
    if bool(os_.get("publishNotReadyAddresses")) != bool(ds.get("publishNotReadyAddresses")):
        return True
    labels = observed["metadata"].get("labels") or {}
    return any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items())


# ----------------------------------------------------------------------------------- decide


Planner = Callable[[ParallelDeployment, int], GroupPlan]
REJECTED_RECHECK_SECONDS = 30.0


def _left_untouched(
    prev: ParallelDeploymentStatus, generation: int, reason: str, msg: str, now: dt.datetime
) -> Decision:
    """A spec that cannot run: no write but the status. Valid=False says why (once per generation as an
    event); the running group, its gang state and its other conditions stay as they are."""
    d = Decision()
    st = prev.model_copy()
    conds = list(prev.conditions)
    old_valid = _cond(conds, c.COND_VALID)
    if (
        old_valid is None
        or old_valid.status != "False"
        or old_valid.observed_generation != generation
        or old_valid.reason != reason
    ):
        d.events.append(
            EventSpec(c.EVENT_INVALID_SPEC, f"spec refused, running group left untouched: {msg}", True)
        )
    new_valid = set_condition(conds, c.COND_VALID, False, reason, msg, generation, now)
    st.conditions = [new_valid if x.type == c.COND_VALID else x for x in conds]
    if old_valid is None:
        st.conditions.append(new_valid)
    st.observed_generation = generation
    d.state = st
    d.status = st.model_dump(mode="json", by_alias=True, exclude_none=True)
    return d


@dataclass
class Transition:
    """Step 1 of decide(): where the gang goes. ``status`` holds the gang state after the step (group
    generation, restart budget, the restart record); the rest of the status is filled in by step 3."""

    status: ParallelDeploymentStatus
    generation: int
    plan: GroupPlan
    ranks: list[dict[str, Any]]  # rank pods of the group (planned names), of any generation
    foreign: list[dict[str, Any]]  # pods pointed at the group that it cannot have made
    events: list[EventSpec] = field(default_factory=list)
    failures: dict[str, Failure] = field(default_factory=dict)  # lost ranks of the current generation
    restarted: bool = False
    requeue_after: float | None = None

    @property
    def desired(self) -> dict[str, Any]:
        return {p.name: p for p in self.plan.pods}


@dataclass
class Actions:
    """Step 2 of decide(): the writes."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)
    old: list[dict[str, Any]] = field(default_factory=list)  # pods of earlier generations, still there
    current: dict[str, dict[str, Any]] = field(default_factory=dict)  # this generation's pods by name
    created: bool = False  # every pod of this generation exists and none is on its way out
    fills_generation: int | None = None


def _budget(
    prev: ParallelDeploymentStatus, meta: dict[str, Any], generation: int
) -> tuple[ParallelDeploymentStatus, list[EventSpec]]:
    """The restart budget resets on a spec change and on a new value of the retry annotation."""
    # Shallow: every nested value that changes (ranks, conditions, derived) is replaced, never mutated.
    st = prev.model_copy()
    events: list[EventSpec] = []
    if prev.restart_generation != generation:
        st.restart_generation = generation
        st.group_restarts = 0
    retry = (meta.get("annotations") or {}).get(c.ANNOTATION_RETRY)
    if retry is not None and retry != prev.retry_token:
        st.retry_token = retry
        st.group_restarts = 0
        if prev.retry_token is not None or prev.group_restarts:
            events.append(
                EventSpec(
                    c.EVENT_GROUP_RESTARTED,
                    f"retry requested ({c.ANNOTATION_RETRY}={retry}): restart budget reset",
                )
            )
    return st, events


def _new_generation(
    t: Transition, obj: ParallelDeployment, planner: Planner, change: GroupChange, now: dt.datetime
) -> None:
    t.generation += 1
    t.status.last_group_change = change
    t.status.group_created_time = iso(now)
    t.plan = planner(obj, t.generation)


def _lost_ranks(
    t: Transition, current: list[dict[str, Any]], prev: ParallelDeploymentStatus, now: dt.datetime
) -> tuple[dict[str, Failure], str | None]:
    """The ranks of the current generation the group has lost, with their forensics, and the incident in
    words (None when none is lost). One RankFailed event per lost rank that status does not record yet."""
    failures: dict[str, Failure] = {}
    lost = [p for p in current if is_lost(p)]
    missing: list[str] = []
    if t.status.created_generation == t.generation:
        present = {p["metadata"]["name"] for p in current}
        missing = [n for n in t.desired if n not in present]
    if not lost and not missing:
        return failures, None
    for p in lost:
        phase = (p.get("status") or {}).get("phase")
        reason = "Deleted" if is_terminating(p) else "Succeeded" if phase == "Succeeded" else "Failed"
        failures[p["metadata"]["name"]] = failure_of(p, now, reason)
    for n in missing:
        failures[n] = Failure(
            reason="Deleted",
            message="rank pod is gone: deleted, evicted, or taken from the group (ownerReference changed)",
            time=iso(now),
            pod=n,
            group_generation=t.generation,
        )
    known = {(r.last_failure.pod, r.last_failure.group_generation) for r in prev.ranks if r.last_failure}
    for pod_name_, f in failures.items():
        if (pod_name_, f.group_generation) not in known:
            how = "exited" if exited(f) else "failed"
            t.events.append(
                EventSpec(c.EVENT_RANK_FAILED, f"rank pod {pod_name_} {how}: {_describe(f)}", True)
            )
    first_name, first = next(iter(failures.items()))
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return failures, f"rank pod {first_name} {lost_verb(first, first_name in missing)}{more}"


def _restart(
    t: Transition,
    obj: ParallelDeployment,
    incident: str,
    conds: list[Condition],
    planner: Planner,
    now: dt.datetime,
) -> None:
    """A lost rank under the restart policy: restart the gang now, after the backoff, or not at all."""
    st, policy = t.status, obj.spec.restart_policy
    st.last_restart_reason = incident
    if policy.policy == "Never":
        return
    if st.group_restarts >= policy.max_restarts:
        ready = _cond(conds, c.COND_READY)
        if ready is None or ready.reason != c.REASON_RESTART_BUDGET_EXHAUSTED:
            t.events.append(
                EventSpec(
                    c.EVENT_BUDGET_EXHAUSTED,
                    f"{incident}; restart budget of {policy.max_restarts} exhausted: no more restarts until "
                    f"the spec changes or the annotation {c.ANNOTATION_RETRY} gets a new value",
                    True,
                )
            )
        return
    wait = backoff_seconds(st.group_restarts, policy.backoff_seconds, policy.max_backoff_seconds)
    last = parse_iso(st.last_restart_time)
    due = (last + dt.timedelta(seconds=wait)) if (last and wait) else now
    if due > now:
        t.requeue_after = (due - now).total_seconds()
        return
    st.group_restarts += 1
    st.last_restart_time = iso(now)
    t.restarted = True
    _new_generation(t, obj, planner, GroupChange.RESTARTED, now)
    t.events.append(
        EventSpec(
            c.EVENT_GROUP_RESTARTED,
            f"{incident}: recreating all {len(t.plan.pods)} rank pods as a gang "
            f"(restart {st.group_restarts}/{policy.max_restarts})",
            True,
        )
    )


def transition(
    pdep: dict[str, Any],
    obj: ParallelDeployment,
    prev: ParallelDeploymentStatus,
    pods: list[dict[str, Any]],
    now: dt.datetime,
    planner: Planner,
    rejected: str | None,
) -> Transition | Decision:
    """Step 1: the gang transition. A first pass creates generation 1; a pod of the current generation built
    from another template or vLLM config replaces the group (a new generation), unless the API server
    refuses the new pods (``rejected``: the running group is left untouched, a Decision returned as is); a
    lost rank restarts it under the restart policy."""
    meta = pdep["metadata"]
    generation = int(meta.get("generation") or 0)
    st, events = _budget(prev, meta, generation)
    gen = st.group_generation
    created = gen == 0
    if created:
        gen = 1
        st.last_group_change = GroupChange.CREATED
        st.group_created_time = iso(now)
    # A pod this group cannot have made (its name is none of <name>-<index>) carries its ownerReference only
    # because someone pointed it here: it is deleted, and is neither a rank failure nor a change of the group.
    ranks: list[dict[str, Any]] = []
    foreign: list[dict[str, Any]] = []
    for p in pods:
        (ranks if is_rank_pod_name(meta["name"], p["metadata"]["name"]) else foreign).append(p)
    t = Transition(st, gen, planner(obj, gen), ranks, foreign, events)
    if created:
        shape, pc = t.plan.shape, obj.spec.parallel_config
        t.events.append(
            EventSpec(
                c.EVENT_GROUP_CREATED,
                f"creating {shape.pods} rank pods ({shape.layout.value}, DP={pc.data_parallel_size}, "
                f"{shape.gpus_per_pod} GPUs each)",
            )
        )
    desired = t.desired
    tpl_label = t.plan.template_hash[:HASH_LABEL_CHARS]
    cfg_label = t.plan.config_hash[:HASH_LABEL_CHARS]
    current = [p for p in ranks if pod_generation(p) == gen]
    # Terminating pods count too: their labels still say what they were built from. A spec change whose
    # deletes were sent by an operator that died before recording it is a replacement, not a rank failure.
    stale = [
        p
        for p in current
        if (p["metadata"].get("labels") or {}).get(c.LABEL_TEMPLATE_HASH) != tpl_label
        or (p["metadata"].get("labels") or {}).get(c.LABEL_CONFIG_HASH) != cfg_label
        or p["metadata"]["name"] not in desired
    ]
    if stale and rejected is not None:
        d = _left_untouched(
            prev,
            generation,
            c.REASON_POD_REJECTED,
            f"the API server refuses the rank pods of this spec (a dry-run create of {t.plan.pods[0].name}): "
            f"{rejected}",
            now,
        )
        d.requeue_after = REJECTED_RECHECK_SECONDS  # a missing PriorityClass or ServiceAccount may appear
        return d
    if stale:
        old_cfg = (stale[0]["metadata"].get("labels") or {}).get(c.LABEL_CONFIG_HASH, "?")
        why = "vLLM config hash changed" if old_cfg != cfg_label else "pod template changed"
        _new_generation(t, obj, planner, GroupChange.REPLACED, now)
        t.events.append(
            EventSpec(
                c.EVENT_GROUP_REPLACED,
                f"{why}: replacing the whole group ({len(current)} old pods deleted first, then "
                f"{len(t.plan.pods)} new pods; old and new ranks never run together)",
            )
        )
        return t
    t.failures, incident = _lost_ranks(t, current, prev, now)
    if incident is not None:
        _restart(t, obj, incident, list(prev.conditions), planner, now)
    return t


def actions(t: Transition, services: list[dict[str, Any]]) -> Actions:
    """Step 2: the writes. Pods of earlier generations are deleted, and the current generation is created
    only once they are gone; a group that lost a rank and waits for its restart (backoff, exhausted budget,
    restartPolicy Never) is not refilled pod by pod. Drifted labels and Services are applied."""
    a = Actions()
    gen, desired = t.generation, t.desired
    for p in t.ranks:
        g = pod_generation(p)
        if g < gen or (g == gen and p["metadata"]["name"] not in desired):
            a.old.append(p)
        elif g == gen:
            a.current[p["metadata"]["name"]] = p
    for p in a.old + t.foreign:
        if not is_terminating(p):
            a.delete.append(("Pod", p["metadata"]["name"], p["metadata"]["uid"]))
    created_before = t.status.created_generation == gen
    if not a.old:
        lost_now = any(is_lost(p) for p in a.current.values())
        waiting = (bool(t.failures) and not t.restarted) or t.requeue_after is not None
        for n, pp in desired.items():
            obs = a.current.get(n)
            if obs is None:
                if created_before and (waiting or lost_now):
                    continue  # a failed group waits for its restart; it is not refilled pod by pod
                a.apply.append(pp.body)
            elif not is_terminating(obs) and _pod_differs(obs, pp.body):
                a.apply.append(pp.body)
        live = not any(is_terminating(p) for p in a.current.values())
        if a.current and len(a.current) == len(desired) and live:
            a.created = True
        elif live and not created_before:
            created_now = {pp["metadata"]["name"] for pp in a.apply if pp["kind"] == "Pod"}
            if set(desired) <= created_now | set(a.current):
                a.fills_generation = gen
    a.apply += _service_writes(t.plan.services, services, a.delete)
    return a


def _service_writes(
    planned: list[dict[str, Any]], services: list[dict[str, Any]], delete: list[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """The planned Services that are missing or drifted; Services the plan no longer has go to ``delete``."""
    desired = {s["metadata"]["name"]: s for s in planned}
    observed = {s["metadata"]["name"]: s for s in services}
    out = [s for n, s in desired.items() if n not in observed or _service_differs(observed[n], s)]
    for n, s in observed.items():
        if n not in desired and not s["metadata"].get("deletionTimestamp"):
            delete.append(("Service", n, s["metadata"]["uid"]))
    return out


def _rank_table(
    t: Transition, a: Actions, prev: ParallelDeploymentStatus
) -> tuple[list[RankStatus], int, list[str]]:
    """Per-pod rank status, the number of ready DP ranks, and the scheduler's messages of unschedulable pods."""
    prev_ranks = {r.pod: r for r in prev.ranks}
    ranks: list[RankStatus] = []
    rank_ready: dict[int, bool] = {}
    unschedulable: list[str] = []
    for pp in t.plan.pods:
        obs = a.current.get(pp.name)
        last_failure = t.failures.get(pp.name) or (
            prev_ranks[pp.name].last_failure if pp.name in prev_ranks else None
        )
        r = RankStatus(
            rank=pp.dp_ranks[0],
            ranks=format_ranks(pp.dp_ranks) if len(pp.dp_ranks) > 1 else None,
            pod=pp.name,
            last_failure=last_failure,
        )
        if obs is not None:
            pst = obs.get("status") or {}
            r.phase = "Terminating" if is_terminating(obs) else str(pst.get("phase") or "Pending")
            r.node = obs["spec"].get("nodeName")
            r.ready = pod_counts_ready(obs)
            r.restarts = restart_count(obs)
            pending_why = unschedulable_message(obs)
            if pending_why is not None:
                unschedulable.append(pending_why)
        ranks.append(r)
        # A DP rank is ready when every pod hosting it is (torchrun-style: PP x TP pods per rank).
        for dp_rank in pp.dp_ranks:
            rank_ready[dp_rank] = rank_ready.get(dp_rank, True) and r.ready
    return ranks, sum(rank_ready.values()), unschedulable


def _coming_up_reason(
    t: Transition, a: Actions, unschedulable: list[str], ready_ranks: int, total: int
) -> tuple[str, str, bool]:
    """Why a group that is not Ready and not stopped is not Ready yet: (reason, message, degraded)."""
    st, desired = t.status, t.desired
    if t.requeue_after is not None and t.failures:
        return (
            c.REASON_RESTART_BACKOFF,
            f"{st.last_restart_reason}; group restart in {t.requeue_after:.0f}s (backoff)",
            True,
        )
    if a.old and st.last_group_change == GroupChange.REPLACED:
        return (
            c.REASON_ROLLING_OUT,
            f"replacing the group: waiting for {len(a.old)} old pods to be deleted",
            False,
        )
    if a.old and st.last_group_change == GroupChange.RESTARTED:
        return (
            c.REASON_GROUP_RESTARTING,
            f"{st.last_restart_reason}; waiting for {len(a.old)} old pods to be deleted",
            True,
        )
    if unschedulable:
        gpus = len(unschedulable) * t.plan.gpus_per_pod
        short = "nvidia.com/gpu" in unschedulable[0] or "Insufficient" not in unschedulable[0]
        need = f": {gpus} more nvidia.com/gpu needed ({t.plan.gpus_per_pod} per pod)" if short else ""
        return (
            c.REASON_INSUFFICIENT_CAPACITY,
            f"{len(unschedulable)} of {len(desired)} rank pods unschedulable{need}; no restart until they are "
            f"scheduled; scheduler: {unschedulable[0]}",
            False,
        )
    if len(a.current) < len(desired):
        return c.REASON_CREATING, f"{len(a.current)}/{len(desired)} rank pods created", False
    return c.REASON_WAITING_FOR_RANKS, f"{ready_ranks}/{total} DP ranks ready", False


def status_of(
    t: Transition,
    a: Actions,
    obj: ParallelDeployment,
    verdict: Verdict,
    prev: ParallelDeploymentStatus,
    generation: int,
    now: dt.datetime,
) -> tuple[ParallelDeploymentStatus, list[EventSpec], bool]:
    """Step 3: the status: gang state, rank table, derived values and the kstatus conditions. Returns it
    with the events it adds (deprecation warnings once per generation, GroupReady) and whether the group
    became Ready."""
    st, pc, policy = t.status, obj.spec.parallel_config, obj.spec.restart_policy
    events: list[EventSpec] = []
    st.group_generation = t.generation
    if a.created:
        st.created_generation = t.generation
    ranks, ready_ranks, unschedulable = _rank_table(t, a, prev)
    st.ranks = ranks
    all_ready = len(a.current) == len(t.plan.pods) and all(r.ready for r in ranks) and not a.old
    total = pc.data_parallel_size
    st.total_ranks = total
    st.ready_ranks = ready_ranks
    st.ready = f"{ready_ranks}/{total}"
    st.replicas = total
    st.selector = t.plan.selector
    st.config_hash = t.plan.config_hash
    st.derived = Derived(
        layout=t.plan.layout.value,
        world_size=derived.world_size(pc),
        world_size_across_dp=derived.world_size_across_dp(pc),
        sequence_parallel_moe=derived.sequence_parallel_moe(pc),
        pods=len(t.plan.pods),
        gpus_per_pod=t.plan.gpus_per_pod,
        all2all_backend=derived.effective_all2all(pc),
        master_address=t.plan.master_address,
    )
    st.observed_generation = generation
    conds = list(prev.conditions)

    def setc(type_: str, ok: bool, reason: str, message: str) -> Condition:
        return set_condition(conds, type_, ok, reason, message, generation, now)

    valid = setc(c.COND_VALID, True, c.REASON_SPEC_VALID, "; ".join(verdict.warnings) or "spec is valid")
    prev_valid = _cond(conds, c.COND_VALID)
    if verdict.warnings and (prev_valid is None or prev_valid.observed_generation != generation):
        events.extend(EventSpec(c.EVENT_DEPRECATED_FIELD, w, True) for w in verdict.warnings)
    stopped = bool(t.failures) and not t.restarted and t.requeue_after is None and not a.old
    if stopped and policy.policy == "RecreateGroup":
        msg = f"{st.last_restart_reason}; restart budget of {policy.max_restarts} exhausted (set annotation {c.ANNOTATION_RETRY} to retry)"
        ready = setc(c.COND_READY, False, c.REASON_RESTART_BUDGET_EXHAUSTED, msg)
        progressing = setc(c.COND_PROGRESSING, False, c.REASON_RESTART_BUDGET_EXHAUSTED, msg)
        degraded = setc(c.COND_DEGRADED, True, c.REASON_RESTART_BUDGET_EXHAUSTED, msg)
    elif t.failures and policy.policy == "Never":
        msg = f"{st.last_restart_reason}; restartPolicy Never: the group is left as it is"
        ready = setc(c.COND_READY, False, c.REASON_RANK_FAILED, msg)
        progressing = setc(c.COND_PROGRESSING, False, c.REASON_RESTARTS_DISABLED, msg)
        degraded = setc(c.COND_DEGRADED, True, c.REASON_RANK_FAILED, msg)
    elif all_ready:
        msg = f"all {total} DP ranks ready in {len(t.plan.pods)} pods"
        ready = setc(c.COND_READY, True, c.REASON_ALL_RANKS_READY, msg)
        progressing = setc(c.COND_PROGRESSING, False, c.REASON_STABLE, msg)
        degraded = setc(c.COND_DEGRADED, False, c.REASON_HEALTHY, msg)
    else:
        reason, msg, degraded_flag = _coming_up_reason(t, a, unschedulable, ready_ranks, total)
        ready_reason = reason if reason != c.REASON_WAITING_FOR_RANKS else c.REASON_RANKS_NOT_READY
        ready = setc(c.COND_READY, False, ready_reason, msg)
        progressing = setc(c.COND_PROGRESSING, True, reason, msg)
        degraded = setc(
            c.COND_DEGRADED,
            degraded_flag,
            c.REASON_RANK_FAILED if degraded_flag else c.REASON_HEALTHY,
            msg if degraded_flag else "no failed ranks",
        )
    st.conditions = [valid, ready, progressing, degraded]
    prev_ready = _cond(conds, c.COND_READY)
    became_ready = ready.status == "True" and (prev_ready is None or prev_ready.status != "True")
    if became_ready:
        events.append(EventSpec(c.EVENT_GROUP_READY, ready.message))
    return st, events, became_ready


def decide(
    pdep: dict[str, Any],
    verdict: Verdict,
    pods: list[dict[str, Any]],
    services: list[dict[str, Any]],
    now: dt.datetime,
    planner: Planner = plan,
    rejected: str | None = None,
) -> Decision:
    """transition → actions → status. ``rejected``: the API server's refusal of the new spec's rank pods (a
    dry-run create the reconciler makes before it replaces a running group); the running group is then left
    as it is."""
    generation = int(pdep["metadata"].get("generation") or 0)
    prev = ParallelDeploymentStatus.model_validate(pdep.get("status") or {})
    if not verdict.ok:
        return _left_untouched(
            prev, generation, c.REASON_INVALID_SPEC, "; ".join(str(i) for i in verdict.errors), now
        )
    assert verdict.obj is not None
    t = transition(pdep, verdict.obj, prev, pods, now, planner, rejected)
    if isinstance(t, Decision):
        return t
    a = actions(t, services)
    st, events, became_ready = status_of(t, a, verdict.obj, verdict, prev, generation, now)
    return Decision(
        apply=a.apply,
        delete=a.delete,
        events=t.events + events,
        state=st,
        status=st.model_dump(mode="json", by_alias=True, exclude_none=True),
        requeue_after=t.requeue_after,
        plan=t.plan,
        became_ready=became_ready,
        restarted=t.restarted,
        fills_generation=a.fills_generation,
        new_generation=st.group_generation != prev.group_generation,
    )
