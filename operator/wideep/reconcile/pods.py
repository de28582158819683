"""What a rank pod says: its group generation, whether it is ready, stopped, lost or unschedulable, and the
facts the gang decisions act on. Pure functions of one pod object (as the watch cache trims it)."""

from __future__ import annotations

from typing import Any

from wideep.api import constants as c
from wideep.kube.cache import PodClassifier


def pod_generation(pod: dict[str, Any]) -> int:
    raw = (pod["metadata"].get("annotations") or {}).get(c.ANNOTATION_GROUP_GENERATION, "0")
    try:
        return int(raw)
    except ValueError:
        return 0


def is_rank_pod_name(group: str, pod: str) -> bool:
    """Whether ``pod`` is a name the planner gives a rank pod of ``group`` (planner.pod_name)."""
    index = pod[len(group) + 1 :] if pod.startswith(group + "-") else ""
    return index.isascii() and index.isdigit() and str(int(index)) == index


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    if st.get("phase") != "Running":
        return False
    return any(cd.get("type") == "Ready" and cd.get("status") == "True" for cd in st.get("conditions") or [])


def pod_counts_ready(pod: dict[str, Any]) -> bool:
    """A rank pod that counts as ready: Ready, not on its way out, and no container of it stopped (the
    kubelet may still report the pod Ready for a moment after its serving container exited)."""
    return is_ready(pod) and not is_terminating(pod) and not stopped_containers(pod)


def restart_count(pod: dict[str, Any]) -> int:
    st = pod.get("status") or {}
    statuses = (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or [])
    return sum(int(cs.get("restartCount") or 0) for cs in statuses)


def _terminated(cs: dict[str, Any]) -> dict[str, Any] | None:
    return (cs.get("state") or {}).get("terminated") or None


def stopped_containers(pod: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The (container status, terminated state) of every container that has stopped for good: a serving
    container terminated for any reason and with any exit code (rank pods run with restartPolicy Never, so
    a terminated serving container never comes back), and an init container that ended with a non-zero
    exit code. An init container that ended with 0 has done its job. Serving containers come first."""
    st = pod.get("status") or {}
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for cs in st.get("containerStatuses") or []:
        term = _terminated(cs)
        if term is not None:
            out.append((cs, term))
    for cs in st.get("initContainerStatuses") or []:
        term = _terminated(cs)
        if term is not None and term.get("exitCode") not in (None, 0):
            out.append((cs, term))
    return out


def is_stopped(pod: dict[str, Any]) -> bool:
    """A rank pod whose rank process has ended, for any reason: phase Succeeded (every container exited 0: a
    vLLM rank that lost a DP peer shuts down in order and exits 0) or Failed, or a container that stopped
    while the pod is still reported Running (stopped_containers)."""
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed") or bool(stopped_containers(pod))


def unschedulable_message(pod: dict[str, Any]) -> str | None:
    st = pod.get("status") or {}
    if st.get("phase") not in (None, "Pending") or pod["spec"].get("nodeName"):
        return None
    for cd in st.get("conditions") or []:
        if (
            cd.get("type") == "PodScheduled"
            and cd.get("status") == "False"
            and cd.get("reason") == "Unschedulable"
        ):
            return str(cd.get("message") or "Unschedulable")
    return None


def is_lost(pod: dict[str, Any]) -> bool:
    """A rank the group has lost: the pod is on its way out, its rank process stopped, or a container
    restarted (a restarted rank cannot rejoin its DP group). Any of these costs the group a gang restart."""
    return is_terminating(pod) or is_stopped(pod) or restart_count(pod) > 0


def stop_facts(pod: dict[str, Any]) -> tuple[Any, ...] | None:
    """What decide() reports of a stopped pod (None while it runs): its phase and each stopped container's
    name, exit code, reason and message, which the restart reason and the RankFailed event quote."""
    if not is_stopped(pod):
        return None
    return (
        (pod.get("status") or {}).get("phase"),
        *(
            (cs.get("name"), term.get("exitCode"), term.get("reason"), term.get("message"))
            for cs, term in stopped_containers(pod)
        ),
    )


def incident_facts(pod: dict[str, Any]) -> tuple[bool, tuple[Any, ...] | None, int, bool]:
    """The incidents decide() acts on in a pod: on its way out, stopped (how), restarts, unschedulable."""
    return (
        is_terminating(pod),
        stop_facts(pod),
        restart_count(pod),
        unschedulable_message(pod) is not None,
    )


def has_incident(pod: dict[str, Any]) -> bool:
    return any(incident_facts(pod))


def decision_facts(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What decide() acts on in a pod, beyond progress figures: which pod it is and whose (uid, owners), what
    it was built from (labels, annotations: hashes, group generation), and the incidents (deleting, Failed,
    restarted, unschedulable). Two versions of a pod with equal facts differ only in what the status reports
    as progress (phase Pending/Running, node, readiness): decide() makes the same writes and events for both,
    and statuses that differ by progress_only() (tests/reconcile/test_progress_events.py). Readiness that
    completes or breaks a Ready group is not progress; the cache notes it apart (Cache._set_ready)."""
    meta = pod["metadata"]
    return (
        meta.get("uid"),
        meta.get("labels"),
        meta.get("annotations"),
        tuple(r.get("uid") for r in meta.get("ownerReferences") or []),
        *incident_facts(pod),
    )


# How the watch cache tells news from progress (wideep.kube.cache.Cache).
CLASSIFIER = PodClassifier(facts=decision_facts, incident=has_incident, counts_ready=pod_counts_ready)
