"""Operator crashes: SIGKILL at random moments while a 128-rank group is created, updated (a template change:
full replacement) and gang-restarted (a rank failed through kwok's failure label).

After each crash a new operator process starts; the cluster must converge to exactly the planned pods:
128 pods, unique DP ranks 0..127, all owned by the ParallelDeployment, none of an older group generation or
template, no orphans, status Ready "128/128", and the gang state exact (a restart counted once, a replacement
not counted as a restart, the group generation bumped exactly once per change).

"Random moments" are drawn over each phase's own length: creation and replacement are first run once without
a crash to time them (until converged; a gang restart takes as long as a replacement), and each kill then
comes after a delay uniform in [0, that time], so crashes land early, midway and late in creation, deletion of
the old generation and creation of the new one. A third of the trials crash the new operator a second time,
moments after it starts (mid-resume).

``WIDEEP_CRASH_TRIALS`` (default 20, as the issue asks; fewer for a quick local run),
``WIDEEP_CRASH_RANKS`` (default 128), ``WIDEEP_RELIABILITY_SEED``
(printed) replay a run.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest

from devcluster.cluster import LocalCluster
from tests.support.builders import on_pool, pdep
from tests.support.kube import Kube, uids
from tests.support.operator import Operator
from tests.support.reliability import (
    Operators,
    percentiles,
    purge,
    report,
    unexpected_log_lines,
    wait_converged,
)
from tests.support.waits import wait_until
from wideep.api import constants as c

TRIALS = int(os.environ.get("WIDEEP_CRASH_TRIALS", "20"))
RANKS = int(os.environ.get("WIDEEP_CRASH_RANKS", "128"))
SEED = int(os.environ.get("WIDEEP_RELIABILITY_SEED", str(random.randrange(1 << 30))))
PHASES = ("create", "update", "restart")
NAME = "crash"


def _spec(namespace: str, pool: str, trial: int) -> dict[str, Any]:
    obj = on_pool(pdep(NAME, namespace, dp=RANKS, max_restarts=1000), pool)
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = f"vllm/vllm-openai:v0.11.1-t{trial}"
    return obj


@pytest.mark.slow
def test_sigkill_at_random_moments_converges_to_exactly_the_plan(
    cluster: LocalCluster, kube: Kube, operators: Operators, namespace: str, gpu_pool: str
) -> None:
    rng = random.Random(SEED)
    op = operators.start([namespace])
    kills = 0
    converge_s: list[float] = []
    partial: list[str] = []
    per_phase: dict[str, int] = dict.fromkeys(PHASES, 0)
    t_start = time.monotonic()

    def kill_and_restart(current: Operator) -> Operator:
        nonlocal kills
        current.kill()
        kills += 1
        obj = kube.get_pdep(namespace, NAME) or {}
        st = obj.get("status") or {}
        pods = kube.pods(namespace, NAME)
        gens = sorted({p["metadata"]["annotations"].get(c.ANNOTATION_GROUP_GENERATION) for p in pods})
        partial.append(
            f"{len(pods)} pods (gens {','.join(map(str, gens))}), status gen {st.get('groupGeneration')}"
        )
        return operators.start([namespace])

    def trigger(phase: str, trial: int) -> None:
        if phase == "create":
            if kube.get_pdep(namespace, NAME) is not None:
                purge(cluster, namespace, timeout=120)
                assert not kube.pods(namespace), "the previous group's pods outlived it"
            assert kube.apply(_spec(namespace, gpu_pool, trial)).returncode == 0
        elif phase == "update":
            assert kube.apply(_spec(namespace, gpu_pool, trial)).returncode == 0
        else:
            kube.fail_pod(namespace, f"{NAME}-{rng.randrange(RANKS)}")

    # Calibration: creation and replacement once each, undisturbed (a gang restart does what a replacement
    # does: delete every pod, wait until they are gone, create them all again).
    window: dict[str, float] = {}
    for i, phase in enumerate(("create", "update")):
        trigger(phase, -1 - i)
        t0 = time.monotonic()
        if phase != "create":
            wait_until(
                "the change to begin",
                lambda: (kube.condition(namespace, NAME, c.COND_READY) or {}).get("status") == "False",
                timeout=30,
                interval=0.02,
            )
        wait_converged(kube, namespace, NAME, ranks=RANKS, timeout=300, alive=op.alive)
        window[phase] = time.monotonic() - t0
    window["restart"] = window["update"]
    obj = kube.get_pdep(namespace, NAME)
    assert obj is not None
    prev: dict[str, Any] = {
        "gen": obj["status"]["groupGeneration"],
        "restarts": obj["status"]["groupRestarts"],
        "uid": obj["metadata"]["uid"],
        "uids": uids(kube.live_pods(namespace, NAME)),
    }

    for trial in range(TRIALS):
        phase = PHASES[trial % len(PHASES)]
        per_phase[phase] += 1
        trigger(phase, trial)
        time.sleep(rng.uniform(0.0, window[phase]))
        op = kill_and_restart(op)
        if rng.random() < 1 / 3:  # a second crash, moments after the restart (mid-resume)
            time.sleep(rng.uniform(0.0, 2.0))
            op = kill_and_restart(op)

        def expected(
            obj: dict[str, Any], phase: str = phase, trial: int = trial, prev: dict[str, Any] = prev
        ) -> list[str]:
            """The gang state this trial must end in: the change counted exactly once."""
            st = obj["status"]
            got = (st.get("groupGeneration"), st.get("groupRestarts"), st.get("lastGroupChange"))
            want = {
                "create": (1, 0, "Created"),
                "update": (prev["gen"] + 1, 0, "Replaced"),
                "restart": (prev["gen"] + 1, prev["restarts"] + 1, "Restarted"),
            }[phase]
            if got != want:
                return [f"(group generation, restarts, last change) {got}, want {want}"]
            if phase != "create" and obj["metadata"]["uid"] != prev["uid"]:
                return ["the ParallelDeployment was recreated"]
            live = kube.live_pods(namespace, NAME)
            if phase == "update":
                images = {p["spec"]["containers"][0]["image"] for p in live}
                if images != {f"vllm/vllm-openai:v0.11.1-t{trial}"}:
                    return [f"images {images}"]
            if phase == "restart" and uids(live) & prev["uids"]:
                return ["pods of before the restart are still there"]
            return []

        try:
            converge_s.append(
                wait_converged(
                    kube, namespace, NAME, ranks=RANKS, timeout=300, alive=op.alive, expect=expected
                )
            )
        except AssertionError as exc:
            st = (kube.get_pdep(namespace, NAME) or {}).get("status") or {}
            raise AssertionError(
                f"trial {trial} ({phase}, seed {SEED}, {kills} crashes so far, state at the last: "
                f"{partial[-1]}): {exc}; last restart reason {st.get('lastRestartReason')!r}"
            ) from None
        obj = kube.get_pdep(namespace, NAME)
        assert obj is not None
        prev = {
            "gen": obj["status"]["groupGeneration"],
            "restarts": obj["status"]["groupRestarts"],
            "uid": obj["metadata"]["uid"],
            "uids": uids(kube.live_pods(namespace, NAME)),
        }

    logs = "".join(o.log() for o in operators.started)
    bad = unexpected_log_lines(logs)
    report(
        "operator_crashes",
        seed=SEED,
        ranks=RANKS,
        trials=TRIALS,
        per_phase=per_phase,
        phase_length_ms={k: round(v * 1000) for k, v in window.items()},
        sigkills=kills,
        faults_survived=kills,
        converge_after_restart_ms={k: round(v * 1000) for k, v in percentiles(converge_s).items()},
        state_at_kill=partial,
        lost=0,
        total_s=round(time.monotonic() - t_start),
    )
    assert not bad, "\n".join(bad[:20])
    purge(cluster, namespace)
