"""A tiny simulated cluster for the pure gang decision: decide() applied pass after pass, with pods whose
statuses the test sets by hand. No API server."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from tests.support.builders import parallel_deployment
from wideep.api import constants as c
from wideep.api.validate import validate_object
from wideep.reconcile.decide import Decision, decide

T0 = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.UTC)


def make_pdep(dp: int = 4, generation: int = 1, **restart: Any) -> dict[str, Any]:
    """The group the decide tests simulate: ``g`` in ``ns``, external LB with expert parallel, DP ``dp``."""
    return parallel_deployment(
        "g",
        namespace="ns",
        uid="uid-g",
        generation=generation,
        parallel_config={
            "dataParallelSize": dp,
            "dataParallelExternalLb": True,
            "enableExpertParallel": True,
        },
        containers=[{"name": "vllm", "image": "img:1", "args": ["m"]}],
        restartPolicy={"maxRestarts": 2, "backoffSeconds": 10, **restart},
    )


def make_unschedulable(pod: dict[str, Any]) -> None:
    """The scheduler's verdict on a pod that does not fit: unbound, PodScheduled=False Unschedulable."""
    pod["spec"].pop("nodeName", None)
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
            }
        ],
    }


class World:
    """A tiny simulated cluster: applies create pods, deletes remove them, statuses are set by hand."""

    def __init__(self, pdep: dict[str, Any]) -> None:
        self.pdep = pdep
        self.pods: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.uid = 0
        self.now = T0

    def step(self, seconds: float = 1.0) -> Decision:
        self.now += dt.timedelta(seconds=seconds)
        d = decide(
            self.pdep,
            validate_object(self.pdep),
            list(self.pods.values()),
            list(self.services.values()),
            self.now,
        )
        for kind, name, _uid in d.delete:
            (self.pods if kind == "Pod" else self.services).pop(name, None)
        for applied in d.apply:
            obj = copy.deepcopy(applied)
            target = self.pods if obj["kind"] == "Pod" else self.services
            old = target.get(obj["metadata"]["name"])
            if old is not None:
                old["metadata"]["labels"] = obj["metadata"]["labels"]
                old["metadata"]["annotations"] = obj["metadata"].get("annotations")
                continue
            self.uid += 1
            obj["metadata"]["uid"] = f"u{self.uid}"
            obj.setdefault("status", {"phase": "Pending"})
            target[obj["metadata"]["name"]] = obj
        self.pdep["status"] = d.status
        return d

    def run_all(self) -> None:
        for pod in self.pods.values():
            pod["spec"]["nodeName"] = "n1"
            pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}

    def fail(self, name: str, code: int = 137, reason: str = "OOMKilled") -> None:
        self.pods[name]["status"] = {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "vllm",
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": code, "reason": reason, "message": "boom"}},
                }
            ],
        }

    def cond(self, type_: str) -> dict[str, Any]:
        return next(x for x in self.pdep["status"]["conditions"] if x["type"] == type_)

    def gens(self) -> set[str]:
        return {p["metadata"]["annotations"][c.ANNOTATION_GROUP_GENERATION] for p in self.pods.values()}


def ready_world(dp: int = 4, **restart: Any) -> World:
    w = World(make_pdep(dp, **restart))
    w.step()
    w.run_all()
    w.step()
    assert w.cond(c.COND_READY)["status"] == "True"
    return w
