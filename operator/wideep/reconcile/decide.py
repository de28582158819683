"""Decide: (ParallelDeployment, observed children, now) → writes to make and the new status. Pure.

The gang state lives in the object's status (``groupGeneration``, ``createdGeneration``,
``groupRestarts``, ...), so an operator restart resumes exactly where the last one stopped.

Group generations: every rank pod carries the generation it was created for. A restart or a
replacement bumps the generation; pods of older generations are deleted, and the new
generation is created only when no pod of an older one is left, so old and new ranks never
run together (a mixed DP group hangs vLLM, vllm-serving-facts.md §6).
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
    status: dict[str, Any] = field(default_factory=dict)
    requeue_after: float | None = None
    plan: GroupPlan | None = None
    became_ready: bool = False
    restarted: bool = False
    # This pass creates every missing pod of this group generation: once all those creates succeed, the
    # status written after them may already record it (createdGeneration), sparing the next pass a write.
    fills_generation: int | None = None


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
    d.status = st.model_dump(mode="json", by_alias=True, exclude_none=True)
    return d


def decide(
    pdep: dict[str, Any],
    verdict: Verdict,
    pods: list[dict[str, Any]],
    services: list[dict[str, Any]],
    now: dt.datetime,
    planner: Planner = plan,
    rejected: str | None = None,
) -> Decision:
    """``rejected``: the API server's refusal of the new spec's rank pods (a dry-run create the reconciler
    makes before it replaces a running group); the running group is then left as it is."""
    meta = pdep["metadata"]
    generation = int(meta.get("generation") or 0)
    prev = ParallelDeploymentStatus.model_validate(pdep.get("status") or {})
    # Shallow: every nested value that changes (ranks, conditions, derived) is replaced, never mutated; a deep
    # copy of 1024 rank entries cost ~0.1 s per pass (bench --profile).
    st = prev.model_copy()
    conds = list(prev.conditions)
    d = Decision()

    if not verdict.ok:
        return _left_untouched(
            prev, generation, c.REASON_INVALID_SPEC, "; ".join(str(i) for i in verdict.errors), now
        )

    assert verdict.obj is not None
    spec = verdict.obj.spec
    pc = spec.parallel_config
    policy = spec.restart_policy
    # Budget resets: a spec change, or a new value of the retry annotation.
    if prev.restart_generation != generation:
        st.restart_generation = generation
        st.group_restarts = 0
    retry = (meta.get("annotations") or {}).get(c.ANNOTATION_RETRY)
    if retry is not None and retry != prev.retry_token:
        st.retry_token = retry
        st.group_restarts = 0
        if prev.retry_token is not None or prev.group_restarts:
            d.events.append(
                EventSpec(
                    c.EVENT_GROUP_RESTARTED,
                    f"retry requested ({c.ANNOTATION_RETRY}={retry}): restart budget reset",
                )
            )

    gen = st.group_generation
    if gen == 0:
        gen = 1
        st.last_group_change = "Created"
        st.group_created_time = iso(now)
        d.events.append(
            EventSpec(
                c.EVENT_GROUP_CREATED,
                f"creating {derived.pods(pc)} rank pods ({derived.layout(pc).value}, DP={pc.data_parallel_size}, "
                f"{derived.gpus_per_pod(pc)} GPUs each)",
            )
        )
    the_plan = planner(verdict.obj, gen)
    desired = {p.name: p for p in the_plan.pods}
    tpl_label = the_plan.template_hash[:HASH_LABEL_CHARS]
    cfg_label = the_plan.config_hash[:HASH_LABEL_CHARS]

    # A pod this group cannot have made (its name is none of <name>-<index>) carries its ownerReference only
    # because someone pointed it here: it is deleted, and is neither a rank failure nor a change of the group.
    ours: list[dict[str, Any]] = []
    foreign: list[dict[str, Any]] = []
    for p in pods:
        (ours if is_rank_pod_name(meta["name"], p["metadata"]["name"]) else foreign).append(p)
    pods = ours
    current = [p for p in pods if pod_generation(p) == gen]
    # Terminating pods count too: their labels still say what they were built from. A spec change whose
    # deletes were sent by an operator that died before recording it is a replacement, not a rank failure.
    stale = [
        p
        for p in current
        if (p["metadata"].get("labels") or {}).get(c.LABEL_TEMPLATE_HASH) != tpl_label
        or (p["metadata"].get("labels") or {}).get(c.LABEL_CONFIG_HASH) != cfg_label
        or p["metadata"]["name"] not in desired
    ]
    rank_failures: dict[str, Failure] = {}

    if stale and rejected is not None:
        d = _left_untouched(
            prev,
            generation,
            c.REASON_POD_REJECTED,
            f"the API server refuses the rank pods of this spec (a dry-run create of {the_plan.pods[0].name}): "
            f"{rejected}",
            now,
        )
        d.requeue_after = REJECTED_RECHECK_SECONDS  # a missing PriorityClass or ServiceAccount may appear
        return d
    if stale and gen > 0:
        old_cfg = (stale[0]["metadata"].get("labels") or {}).get(c.LABEL_CONFIG_HASH, "?")
        why = "vLLM config hash changed" if old_cfg != cfg_label else "pod template changed"
        gen += 1
        st.last_group_change = "Replaced"
        st.group_created_time = iso(now)
        d.events.append(
            EventSpec(
                c.EVENT_GROUP_REPLACED,
                f"{why}: replacing the whole group ({len(current)} old pods deleted first, then "
                f"{len(the_plan.pods)} new pods; old and new ranks never run together)",
            )
        )
        the_plan = planner(verdict.obj, gen)
        desired = {p.name: p for p in the_plan.pods}
        current = []
    else:
        # Incident detection on the current generation.
        failed = [p for p in current if is_lost(p)]
        missing = []
        if st.created_generation == gen:
            present = {p["metadata"]["name"] for p in current}
            missing = [n for n in desired if n not in present]
        if failed or missing:
            for p in failed:
                phase = (p.get("status") or {}).get("phase")
                reason = "Deleted" if is_terminating(p) else "Succeeded" if phase == "Succeeded" else "Failed"
                rank_failures[p["metadata"]["name"]] = failure_of(p, now, reason)
            for n in missing:
                rank_failures[n] = Failure(
                    reason="Deleted",
                    message="rank pod is gone: deleted, evicted, or taken from the group (ownerReference changed)",
                    time=iso(now),
                    pod=n,
                    group_generation=gen,
                )
            # One Warning event per failed rank, once: a failure already recorded in status is not new.
            known = {
                (r.last_failure.pod, r.last_failure.group_generation) for r in prev.ranks if r.last_failure
            }
            for pod_name_, f in rank_failures.items():
                if (pod_name_, f.group_generation) not in known:
                    how = "exited" if exited(f) else "failed"
                    d.events.append(
                        EventSpec(c.EVENT_RANK_FAILED, f"rank pod {pod_name_} {how}: {_describe(f)}", True)
                    )
            first = next(iter(rank_failures.items()))
            incident = f"rank pod {first[0]} {lost_verb(first[1], first[0] in missing)}" + (
                f" (+{len(rank_failures) - 1} more)" if len(rank_failures) > 1 else ""
            )
            if policy.policy == "Never":
                st.last_restart_reason = incident
            elif st.group_restarts >= policy.max_restarts:
                ready = _cond(conds, c.COND_READY)
                if ready is None or ready.reason != c.REASON_RESTART_BUDGET_EXHAUSTED:
                    d.events.append(
                        EventSpec(
                            c.EVENT_BUDGET_EXHAUSTED,
                            f"{incident}; restart budget of {policy.max_restarts} exhausted: no more restarts until "
                            f"the spec changes or the annotation {c.ANNOTATION_RETRY} gets a new value",
                            True,
                        )
                    )
                st.last_restart_reason = incident
            else:
                wait = backoff_seconds(st.group_restarts, policy.backoff_seconds, policy.max_backoff_seconds)
                last = parse_iso(st.last_restart_time)
                due = (last + dt.timedelta(seconds=wait)) if (last and wait) else now
                if due > now:
                    d.requeue_after = (due - now).total_seconds()
                    st.last_restart_reason = incident
                else:
                    gen += 1
                    st.group_restarts += 1
                    st.last_restart_time = iso(now)
                    st.last_restart_reason = incident
                    st.last_group_change = "Restarted"
                    st.group_created_time = iso(now)
                    d.restarted = True
                    d.events.append(
                        EventSpec(
                            c.EVENT_GROUP_RESTARTED,
                            f"{incident}: recreating all {len(desired)} rank pods as a gang "
                            f"(restart {st.group_restarts}/{policy.max_restarts})",
                            True,
                        )
                    )
                    the_plan = planner(verdict.obj, gen)
                    desired = {p.name: p for p in the_plan.pods}
                    current = []

    st.group_generation = gen
    d.plan = the_plan

    # ---- actions: delete old generations, then create the new one once they are gone.
    old = [
        p
        for p in pods
        if pod_generation(p) < gen or (pod_generation(p) == gen and p["metadata"]["name"] not in desired)
    ]
    for p in old + foreign:
        if not is_terminating(p):
            d.delete.append(("Pod", p["metadata"]["name"], p["metadata"]["uid"]))
    by_name_current = {
        p["metadata"]["name"]: p
        for p in pods
        if pod_generation(p) == gen and p["metadata"]["name"] in desired
    }
    exhausted_or_stopped = False
    if not old:
        failed_now = any(is_lost(p) for p in by_name_current.values())
        exhausted_or_stopped = bool(rank_failures) and not d.restarted
        for n, pp in desired.items():
            obs = by_name_current.get(n)
            if obs is None:
                if st.created_generation == gen and (exhausted_or_stopped or d.requeue_after is not None):
                    continue  # a failed group waits for its restart; it is not refilled pod by pod
                if failed_now and st.created_generation == gen:
                    continue
                d.apply.append(pp.body)
            elif not is_terminating(obs) and _pod_differs(obs, pp.body):
                d.apply.append(pp.body)
        live = not any(is_terminating(p) for p in by_name_current.values())
        if by_name_current and len(by_name_current) == len(desired) and live:
            st.created_generation = gen
        elif live and st.created_generation != gen:
            created_now = {pp["metadata"]["name"] for pp in d.apply if pp["kind"] == "Pod"}
            if set(desired) <= created_now | set(by_name_current):
                d.fills_generation = gen
    desired_svcs = {s["metadata"]["name"]: s for s in the_plan.services}
    observed_svcs = {s["metadata"]["name"]: s for s in services}
    for n, s in desired_svcs.items():
        if n not in observed_svcs or _service_differs(observed_svcs[n], s):
            d.apply.append(s)
    for n, s in observed_svcs.items():
        if n not in desired_svcs and not s["metadata"].get("deletionTimestamp"):
            d.delete.append(("Service", n, s["metadata"]["uid"]))

    # ---- status
    prev_ranks = {r.pod: r for r in prev.ranks}
    ranks: list[RankStatus] = []
    rank_ready: dict[int, bool] = {}
    unschedulable: list[str] = []
    waiting = 0
    for pp in the_plan.pods:
        obs = by_name_current.get(pp.name)
        last_failure = rank_failures.get(pp.name) or (
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
            if not r.ready:
                waiting += 1
            pending_why = unschedulable_message(obs)
            if pending_why is not None:
                unschedulable.append(pending_why)
        ranks.append(r)
        for (
            dp_rank
        ) in pp.dp_ranks:  # a DP rank is ready when every pod hosting it is (TorchRun: PP x TP pods)
            rank_ready[dp_rank] = rank_ready.get(dp_rank, True) and r.ready
    ready_ranks = sum(rank_ready.values())
    st.ranks = ranks
    all_ready = len(by_name_current) == len(desired) and all(r.ready for r in ranks) and not old
    total = pc.data_parallel_size
    st.total_ranks = total
    st.ready_ranks = ready_ranks
    st.ready = f"{ready_ranks}/{total}"
    st.replicas = total
    st.selector = the_plan.selector
    st.config_hash = the_plan.config_hash
    st.derived = Derived(
        layout=the_plan.layout.value,
        world_size=derived.world_size(pc),
        world_size_across_dp=derived.world_size_across_dp(pc),
        sequence_parallel_moe=derived.sequence_parallel_moe(pc),
        pods=len(the_plan.pods),
        gpus_per_pod=the_plan.gpus_per_pod,
        all2all_backend=derived.effective_all2all(pc),
        master_address=the_plan.master_address,
    )
    st.observed_generation = generation

    def setc(type_: str, ok: bool, reason: str, message: str) -> Condition:
        return set_condition(conds, type_, ok, reason, message, generation, now)

    valid = setc(c.COND_VALID, True, c.REASON_SPEC_VALID, "; ".join(verdict.warnings) or "spec is valid")
    prev_valid = _cond(conds, c.COND_VALID)
    if verdict.warnings and (prev_valid is None or prev_valid.observed_generation != generation):
        for w in verdict.warnings:
            d.events.append(EventSpec(c.EVENT_DEPRECATED_FIELD, w, True))
    exhausted = (
        bool(rank_failures)
        and policy.policy == "RecreateGroup"
        and not d.restarted
        and d.requeue_after is None
        and not old
    )
    if exhausted:
        msg = f"{st.last_restart_reason}; restart budget of {policy.max_restarts} exhausted (set annotation {c.ANNOTATION_RETRY} to retry)"
        ready = setc(c.COND_READY, False, c.REASON_RESTART_BUDGET_EXHAUSTED, msg)
        progressing = setc(c.COND_PROGRESSING, False, c.REASON_RESTART_BUDGET_EXHAUSTED, msg)
        degraded = setc(c.COND_DEGRADED, True, c.REASON_RESTART_BUDGET_EXHAUSTED, msg)
    elif rank_failures and policy.policy == "Never":
        msg = f"{st.last_restart_reason}; restartPolicy Never: the group is left as it is"
        ready = setc(c.COND_READY, False, c.REASON_RANK_FAILED, msg)
        progressing = setc(c.COND_PROGRESSING, False, c.REASON_RESTARTS_DISABLED, msg)
        degraded = setc(c.COND_DEGRADED, True, c.REASON_RANK_FAILED, msg)
    elif all_ready:
        msg = f"all {total} DP ranks ready in {len(desired)} pods"
        ready = setc(c.COND_READY, True, c.REASON_ALL_RANKS_READY, msg)
        progressing = setc(c.COND_PROGRESSING, False, c.REASON_STABLE, msg)
        degraded = setc(c.COND_DEGRADED, False, c.REASON_HEALTHY, msg)
    else:
        degraded_flag = False
        if d.requeue_after is not None and rank_failures:
            reason, msg = (
                c.REASON_RESTART_BACKOFF,
                f"{st.last_restart_reason}; group restart in {d.requeue_after:.0f}s (backoff)",
            )
            degraded_flag = True
        elif old and st.last_group_change == "Replaced":
            reason, msg = (
                c.REASON_ROLLING_OUT,
                f"replacing the group: waiting for {len(old)} old pods to be deleted",
            )
        elif old and st.last_group_change == "Restarted":
            reason, msg = (
                c.REASON_GROUP_RESTARTING,
                f"{st.last_restart_reason}; waiting for {len(old)} old pods to be deleted",
            )
            degraded_flag = True
        elif unschedulable:
            gpus = len(unschedulable) * the_plan.gpus_per_pod
            reason = c.REASON_INSUFFICIENT_CAPACITY
            short = "nvidia.com/gpu" in unschedulable[0] or "Insufficient" not in unschedulable[0]
            need = f": {gpus} more nvidia.com/gpu needed ({the_plan.gpus_per_pod} per pod)" if short else ""
            msg = (
                f"{len(unschedulable)} of {len(desired)} rank pods unschedulable{need}; no restart until they are "
                f"scheduled; scheduler: {unschedulable[0]}"
            )
        elif len(by_name_current) < len(desired):
            reason, msg = c.REASON_CREATING, f"{len(by_name_current)}/{len(desired)} rank pods created"
        else:
            reason, msg = c.REASON_WAITING_FOR_RANKS, f"{ready_ranks}/{total} DP ranks ready"
        ready = setc(
            c.COND_READY,
            False,
            reason if reason != c.REASON_WAITING_FOR_RANKS else c.REASON_RANKS_NOT_READY,
            msg,
        )
        progressing = setc(c.COND_PROGRESSING, True, reason, msg)
        degraded = setc(
            c.COND_DEGRADED,
            degraded_flag,
            c.REASON_RANK_FAILED if degraded_flag else c.REASON_HEALTHY,
            msg if degraded_flag else "no failed ranks",
        )
    st.conditions = [valid, ready, progressing, degraded]
    prev_ready = _cond(conds, c.COND_READY)
    d.became_ready = ready.status == "True" and (prev_ready is None or prev_ready.status != "True")
    if d.became_ready:
        d.events.append(EventSpec(c.EVENT_GROUP_READY, ready.message))
    d.status = st.model_dump(mode="json", by_alias=True, exclude_none=True)
    return d
