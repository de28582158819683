"""The bench's ParallelDeployment and exactly what the operator creates for it."""

from __future__ import annotations

import copy
from typing import Any

from tests.support.builders import parallel_deployment

from .common import PD_NAME, PD_PATH, PLURAL, BenchError


def pdep_doc(name: str, namespace: str, ranks: int) -> dict[str, Any]:
    """The DeepSeek-style example (external LB, EP, EPLB, DBO, DeepEP) with ``dataParallelSize = ranks``.

    The example's 64Gi memory limit is dropped so that pods pack onto the fake nodes by GPU count alone.
    """
    doc = parallel_deployment(
        name,
        namespace=namespace,
        example="deepseek-v3-wide-ep",
        parallel_config={"dataParallelSize": ranks},
        restartPolicy={"maxRestarts": 3, "backoffSeconds": 0},
    )
    for ctr in doc["spec"]["template"]["spec"]["containers"]:
        ctr.pop("resources", None)
    return doc


def planned_objects(doc: dict[str, Any], owner_uid: str) -> list[dict[str, Any]]:
    """Exactly what the operator creates for ``doc``: ``plan()`` of the validated object, in the order
    the operator issues them (pods, then Services)."""
    from wideep.api.validate import validate_object
    from wideep.planning.planner import plan

    verdict = validate_object(copy.deepcopy(doc))
    if not verdict.ok or verdict.obj is None:
        raise BenchError(f"bench spec is invalid: {verdict.errors}")
    verdict.obj.metadata["uid"] = owner_uid
    group = plan(verdict.obj, group_generation=1)
    return [*(p.body for p in group.pods), *group.services]


def kind_counts(objects: list[dict[str, Any]]) -> dict[str, int]:
    """{"pods": ..., "services": ...} of a list of planned objects."""
    return {
        k: sum(o["kind"] == kind for o in objects) for k, kind in (("pods", "Pod"), ("services", "Service"))
    }


def planned_counts(n: int) -> dict[str, int]:
    """How many pods and Services the bench spec with ``dataParallelSize = n`` plans (N pods, 3 Services)."""
    return kind_counts(planned_objects(pdep_doc(PD_NAME, "bench", n), "00000000-0000-4000-8000-000000000000"))


def object_path(obj: dict[str, Any]) -> str:
    ns = obj["metadata"]["namespace"]
    if obj["kind"] == "Pod":
        return f"/api/v1/namespaces/{ns}/pods"
    if obj["kind"] == "Service":
        return f"/api/v1/namespaces/{ns}/services"
    if obj["kind"] == "ParallelDeployment":
        return f"{PD_PATH}/namespaces/{ns}/{PLURAL}"
    raise BenchError(f"unexpected kind {obj['kind']}")
