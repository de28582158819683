"""ParallelDeployment manifests as plain dicts, the way the API server stores them.

``parallel_deployment`` is the one builder; everything else here is a preset of it. Every call returns a
fresh, valid object that callers may mutate freely::

    obj = parallel_deployment("big", parallel_config={"dataParallelSize": 16, "dataParallelExternalLb": True})
    set_path(obj, "spec.template.spec.containers[0].args", ["my/model", "--port=1"])
    set_path(obj, "spec.parallelConfig.dataParallelSizeLocal", UNSET)   # delete the key

Keys are the API's camelCase names. ``with_changes`` applies a ``{dotted path: value}`` mapping to a copy,
which is how the rule tables describe their cases.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT
from wideep.api import constants

EXAMPLES_DIR = ROOT / "examples"
IMAGE = "vllm/vllm-openai:v0.11.1"
MODEL = "Qwen/Qwen3-30B-A3B"


class _Unset:
    """Marker for ``set_path``/``with_changes`` and the builder: remove the key instead of setting it."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

Obj = dict[str, Any]


def container(
    name: str = "vllm",
    *,
    image: str | None = IMAGE,
    args: list[str] | None = None,
    env: Mapping[str, str] | list[dict[str, Any]] | None = None,
    **extra: Any,
) -> Obj:
    """A core/v1 Container. ``args`` defaults to just the model; ``env`` may be a name->value mapping."""
    c: Obj = {"name": name}
    if image is not None:
        c["image"] = image
    c["args"] = [MODEL] if args is None else list(args)
    if env is not None:
        c["env"] = (
            [{"name": k, "value": v} for k, v in env.items()] if isinstance(env, Mapping) else list(env)
        )
    c.update(extra)
    return c


def parallel_deployment(
    name: str = "test",
    *,
    namespace: str | None = None,
    example: str | None = None,
    parallel_config: Mapping[str, Any] | None = None,
    containers: list[Obj] | None = None,
    init_containers: list[Obj] | None = None,
    labels: Mapping[str, str] | None = None,
    uid: str | None = None,
    generation: int | None = None,
    status: Obj | None = None,
    **spec: Any,
) -> Obj:
    """A valid ParallelDeployment: one ``vllm`` container, vLLM's defaults for everything unset.

    ``example`` starts from the spec of ``examples/<example>.yaml`` instead. ``parallel_config`` sets keys
    of ``spec.parallelConfig`` (camelCase) over the starting one; ``containers``, ``init_containers`` and
    ``labels`` (the pod template's) replace it; other keyword arguments are spec fields
    (``serving={"port": 8100}``, ``vllmVersion="0.11.0"``, ``restartPolicy=...``) and replace the starting
    value. A value of ``UNSET`` removes the key. ``namespace``, ``uid`` and ``generation`` go to the
    metadata, ``status`` is the status.
    """
    if example is None:
        body: Obj = {"template": {"spec": {"containers": [container()]}}}
    else:
        body = load_example(example)["spec"]
    template = body["template"]
    if containers is not None:
        template["spec"]["containers"] = list(containers)
    if init_containers is not None:
        template["spec"]["initContainers"] = list(init_containers)
    if labels is not None:
        template["metadata"] = {"labels": dict(labels)}
    if parallel_config is not None:
        pc = {**(body.get("parallelConfig") or {}), **parallel_config}
        body["parallelConfig"] = {k: v for k, v in pc.items() if v is not UNSET}
    for key, value in spec.items():
        if value is UNSET:
            body.pop(key, None)
        else:
            body[key] = value
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if uid is not None:
        meta["uid"] = uid
    if generation is not None:
        meta["generation"] = generation
    obj: Obj = {"apiVersion": constants.API_VERSION, "kind": constants.KIND, "metadata": meta, "spec": body}
    if status is not None:
        obj["status"] = status
    return copy.deepcopy(obj)


# --------------------------------------------------------------------------------------- layouts


def external_lb(name: str = "ext", dp: int = 4, tp: int = 1, **pc: Any) -> Obj:
    """External LB, one pod per DP rank, expert parallel."""
    return parallel_deployment(
        name,
        parallel_config={
            "dataParallelSize": dp,
            "tensorParallelSize": tp,
            "dataParallelExternalLb": True,
            "enableExpertParallel": True,
            **pc,
        },
    )


def hybrid_lb(name: str = "hyb", dp: int = 16, local: int = 8, **pc: Any) -> Obj:
    """Hybrid LB: ``dp // local`` pods of ``local`` ranks each."""
    return parallel_deployment(
        name,
        parallel_config={
            "dataParallelSize": dp,
            "dataParallelSizeLocal": local,
            "dataParallelHybridLb": True,
            "enableExpertParallel": True,
            **pc,
        },
    )


def internal_lb(name: str = "int", dp: int = 4, local: int = 2, **pc: Any) -> Obj:
    """Internal LB: a head pod plus headless pods of ``local`` ranks each."""
    return parallel_deployment(
        name, parallel_config={"dataParallelSize": dp, "dataParallelSizeLocal": local, **pc}
    )


def torchrun(name: str = "tr", dp: int = 2, tp: int = 2, **pc: Any) -> Obj:
    """external_launcher (offline, one pod per GPU)."""
    return parallel_deployment(
        name,
        parallel_config={
            "dataParallelSize": dp,
            "tensorParallelSize": tp,
            "distributedExecutorBackend": "external_launcher",
            **pc,
        },
        restartPolicy={"policy": "Never"},
    )


def wide_ep(name: str = "wide", dp: int = 16, **pc: Any) -> Obj:
    """DeepSeek-style wide EP: external LB, DeepEP low-latency, EPLB with 32 redundant experts, DBO."""
    return external_lb(
        name,
        dp=dp,
        all2allBackend="deepep_low_latency",
        enableEplb=True,
        eplbConfig={"numRedundantExperts": 32},
        enableDbo=True,
        **pc,
    )


def pdep(
    name: str,
    namespace: str,
    *,
    dp: int = 4,
    tp: int = 1,
    external: bool = True,
    max_restarts: int | None = None,
    backoff: int = 0,
    **pc: Any,
) -> Obj:
    """A group for the tests on the cluster: expert parallel, external LB when ``dp > 1`` (unless
    ``external=False``), pods labelled ``app=<name>``, restarts without backoff; ``pc`` are more
    parallelConfig keys."""
    parallel: Obj = {"dataParallelSize": dp, "tensorParallelSize": tp, "enableExpertParallel": True}
    if external and dp > 1:
        parallel["dataParallelExternalLb"] = True
    restart: Obj = {"backoffSeconds": backoff}
    if max_restarts is not None:
        restart["maxRestarts"] = max_restarts
    return parallel_deployment(
        name,
        namespace=namespace,
        parallel_config={**parallel, **pc},
        containers=[container(args=["some/model"])],
        labels={"app": name},
        restartPolicy=restart,
    )


def on_pool(obj: Obj, pool: str) -> Obj:
    """Schedule a ParallelDeployment's pods onto a ``tainted_pool`` (``tests.support.cluster``). In place."""
    spec = obj["spec"]["template"]["spec"]
    spec["nodeSelector"] = {"pool": pool}
    spec["tolerations"] = [{"key": "pool", "operator": "Equal", "value": pool, "effect": "NoSchedule"}]
    return obj


# --------------------------------------------------------------------------------------- examples


def example_paths() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


def load_example(name: str, namespace: str | None = None) -> Obj:
    """The first document of ``examples/<name>.yaml`` (``name`` with or without the suffix), in
    ``namespace`` when given."""
    path = EXAMPLES_DIR / (name if name.endswith(".yaml") else name + ".yaml")
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    if namespace is not None:
        doc["metadata"]["namespace"] = namespace
    return doc


# --------------------------------------------------------------------------------------- dotted paths


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for key, index in _STEP.findall(path):
        steps.append(int(index) if index else key)
    return steps


def get_path(obj: Any, path: str, default: Any = None) -> Any:
    """``obj`` at a dotted path like ``spec.template.spec.containers[0].args``; ``default`` if absent."""
    cur = obj
    for step in _steps(path):
        try:
            cur = cur[step]
        except (KeyError, IndexError, TypeError):
            return default
    return cur


def set_path(obj: Obj, path: str, value: Any) -> Obj:
    """Set (or with ``UNSET`` remove) the value at a dotted path, creating mappings on the way. In place."""
    steps = _steps(path)
    cur: Any = obj
    for step, nxt in itertools.pairwise(steps):
        if isinstance(step, int):
            cur = cur[step]
            continue
        if step not in cur or cur[step] is None:
            cur[step] = [] if isinstance(nxt, int) else {}
        cur = cur[step]
    last = steps[-1]
    if value is UNSET:
        if isinstance(last, int):
            del cur[last]
        else:
            cur.pop(last, None)
    else:
        cur[last] = copy.deepcopy(value)
    return obj


def with_changes(obj: Obj, changes: Mapping[str, Any]) -> Obj:
    """A deep copy of ``obj`` with ``{dotted path: value}`` applied in order."""
    out = copy.deepcopy(obj)
    for path, value in changes.items():
        set_path(out, path, value)
    return out
