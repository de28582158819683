"""Run the pure pipeline of a pass on a built-in group before the first real one arrives.

The first pass of a fresh process runs code that has never run (lazily built validators and serialisers,
first-use caches, bytecode CPython 3.11 has not specialised yet), about three times as slow as a warm one
(docs/architecture.md, "Measured choices"); without this, the first group created after an operator (re)start
pays it before its first pod create. ``warm_up()`` pays it at start-up, on a group no API call ever sees.

Pure: no I/O, no caches of the reconciler touched (its verdict and plan caches are keyed by uid).
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import orjson

from wideep.api import constants as c
from wideep.api.validate import validate_object

from .decide import decide

# A small wide-EP group: external LB, expert parallel, DeepEP low latency, EPLB, DBO; what the planner and
# the validator do for every rank pod and Service is the same at any DP size.
WARM_UP_GROUP: dict[str, Any] = {
    "apiVersion": c.API_VERSION,
    "kind": c.KIND,
    "metadata": {"name": "wideep-warm-up", "namespace": "wideep-warm-up", "generation": 1},
    "spec": {
        "parallelConfig": {
            "tensorParallelSize": 1,
            "dataParallelSize": 2,
            "dataParallelSizeLocal": 1,
            "enableExpertParallel": True,
            "enableEplb": True,
            "all2allBackend": "deepep_low_latency",
            "enableDbo": True,
            "dataParallelExternalLb": True,
        },
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "vllm",
                        "image": "vllm/vllm-openai:v0.11.1",
                        "args": ["deepseek-ai/DeepSeek-V3"],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ]
            }
        },
    },
}


@dataclass(frozen=True)
class WarmUp:
    rounds: int
    objects: int  # planned objects of the last round (rank pods + Services)
    seconds: float


def _running(pod: dict[str, Any], uid: str) -> dict[str, Any]:
    out = copy.deepcopy(pod)
    out["metadata"]["uid"] = uid
    out["metadata"]["resourceVersion"] = "1"
    out["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "vllm", "ready": True, "restartCount": 0}],
    }
    return out


def warm_up(rounds: int = 8) -> WarmUp:
    """Each round: a new group's first pass (validate, plan, decide, serialise its creates), then the pass
    that finds its pods Running and Ready. Raises if the built-in group does not validate (a test keeps it
    valid)."""
    t0 = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    objects = 0
    for i in range(rounds):
        obj = copy.deepcopy(WARM_UP_GROUP)
        obj["metadata"]["uid"] = f"00000000-0000-4000-8000-{i:012d}"
        verdict = validate_object(obj)
        if not verdict.ok:
            raise ValueError(f"the warm-up group is invalid: {verdict.errors}")
        first = decide(obj, verdict, [], [], now)
        for o in first.apply:
            orjson.dumps(o)
        objects = len(first.apply)
        pods = [_running(o, f"{i}-{n}") for n, o in enumerate(first.apply) if o["kind"] == "Pod"]
        services = [o for o in first.apply if o["kind"] == "Service"]
        second = decide({**obj, "status": first.status}, verdict, pods, services, now)
        orjson.dumps(second.status)
    return WarmUp(rounds=rounds, objects=objects, seconds=time.perf_counter() - t0)
