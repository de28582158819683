"""``CASES``: the one table of the API's verdicts, which pydantic (``validate_object``), the CRD's CEL and a
real API server are all held to (``tests/api/test_rules.py``, ``tests/api/test_crd.py``).

Every cross-field rule of ``rules.ALL_RULES`` on both sides (``RULE_CASES``, also the seeds of the
agreement strategies), both sides of every numeric, length and item-count bound of the spec schema
(generated from the schema itself, so a new bound gets its cases for free), enums, types, nulls and
reserved args/env.

Decisions recorded here:

* Reserved flags are prefix rules (``--port`` refuses ``--portal`` and ``--port-x``): no vLLM flag other than
  ``--port`` itself starts with ``--port``, so nothing legitimate is lost, and a prefix rule also catches
  ``--port=8000``.
* vLLM's FlexibleArgumentParser reads ``_`` as ``-`` in a flag's name, so ``--data_parallel_size=2`` is
  refused like ``--data-parallel-size=2``.
* ``null`` means unset (the API server prunes nulls before defaulting), and strings are not numbers or
  booleans (``"2"``, ``"true"`` are refused, as the API server refuses them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support.builders import (
    UNSET,
    Obj,
    external_lb,
    hybrid_lb,
    internal_lb,
    parallel_deployment,
    torchrun,
    wide_ep,
    with_changes,
)
from wideep.api.crd import spec_schema
from wideep.api.models import ALL2ALL_BACKENDS
from wideep.api.validate import Verdict, validate_object

PC = "spec.parallelConfig."
C0 = "spec.template.spec.containers[0]."
INIT0 = "spec.template.spec.initContainers[0]."


@dataclass(frozen=True)
class Case:
    """One verdict: ``changes`` ({dotted path: value}) applied to ``base()``; valid when ``path`` is None."""

    id: str
    changes: Mapping[str, Any]
    path: str | None = None
    rule: str = "schema"
    contains: tuple[str, ...] = ()
    base: Callable[[], Obj] = field(default=parallel_deployment)

    @property
    def ok(self) -> bool:
        return self.path is None

    def obj(self) -> Obj:
        return with_changes(self.base(), self.changes)


def ok(id: str, changes: Mapping[str, Any], base: Callable[[], Obj] = parallel_deployment) -> Case:
    return Case(id, changes, base=base)


def bad(
    id: str,
    changes: Mapping[str, Any],
    path: str,
    rule: str = "schema",
    contains: tuple[str, ...] = (),
    base: Callable[[], Obj] = parallel_deployment,
) -> Case:
    return Case(id, changes, path, rule, contains, base)


def _pc(**kw: Any) -> dict[str, Any]:
    return {PC + k: v for k, v in kw.items()}


EPLB_ON = _pc(enableExpertParallel=True, enableEplb=True, dataParallelSize=2)

# ---------------------------------------------------------------------------------------------
# Cross-field rules, each on both sides (rule id -> its cases).

RULE_CASES: list[Case] = [
    # dp-local-le-dp (DP=1 keeps internal-lb-local out of the way)
    ok("dp-local-le-dp/ok", _pc(dataParallelSize=1, dataParallelSizeLocal=1)),
    ok("dp-local-le-dp/ok-equal", _pc(dataParallelSize=4, dataParallelSizeLocal=4)),
    bad(
        "dp-local-le-dp/bad",
        _pc(dataParallelSize=1, dataParallelSizeLocal=2),
        PC + "dataParallelSizeLocal",
        "dp-local-le-dp",
    ),
    # external-lb-needs-dp
    ok("external-lb-needs-dp/ok", _pc(dataParallelSize=2, dataParallelExternalLb=True)),
    bad(
        "external-lb-needs-dp/bad",
        _pc(dataParallelSize=1, dataParallelExternalLb=True),
        PC + "dataParallelExternalLb",
        "external-lb-needs-dp",
    ),
    # external-lb-local-one
    ok("external-lb-local-one/ok-1", _pc(dataParallelSizeLocal=1), base=external_lb),
    ok("external-lb-local-one/ok-unset", _pc(dataParallelSizeLocal=UNSET), base=external_lb),
    bad(
        "external-lb-local-one/bad",
        _pc(dataParallelSizeLocal=2),
        PC + "dataParallelSizeLocal",
        "external-lb-local-one",
        base=external_lb,
    ),
    bad(
        "external-lb-local-one/bad-0",
        _pc(dataParallelSizeLocal=0),
        PC + "dataParallelSizeLocal",
        "external-lb-local-one",
        base=external_lb,
    ),
    # external-hybrid-exclusive
    ok("external-hybrid-exclusive/ok-external", {}, base=external_lb),
    ok("external-hybrid-exclusive/ok-hybrid", {}, base=hybrid_lb),
    bad(
        "external-hybrid-exclusive/bad",
        _pc(dataParallelHybridLb=True),
        PC + "dataParallelHybridLb",
        "external-hybrid-exclusive",
        base=external_lb,
    ),
    # hybrid-lb-needs-local
    ok("hybrid-lb-needs-local/ok", _pc(dataParallelSize=4, dataParallelSizeLocal=2), base=hybrid_lb),
    bad(
        "hybrid-lb-needs-local/bad-unset",
        _pc(dataParallelSizeLocal=UNSET),
        PC + "dataParallelSizeLocal",
        "hybrid-lb-needs-local",
        base=hybrid_lb,
    ),
    bad(
        "hybrid-lb-needs-local/bad-0",
        _pc(dataParallelSizeLocal=0),
        PC + "dataParallelSizeLocal",
        "hybrid-lb-needs-local",
        base=hybrid_lb,
    ),
    # hybrid-lb-local-divides-dp
    ok("hybrid-lb-local-divides-dp/ok", _pc(dataParallelSize=12, dataParallelSizeLocal=4), base=hybrid_lb),
    bad(
        "hybrid-lb-local-divides-dp/bad",
        _pc(dataParallelSize=6, dataParallelSizeLocal=4),
        PC + "dataParallelSizeLocal",
        "hybrid-lb-local-divides-dp",
        base=hybrid_lb,
    ),
    # hybrid-lb-local-not-one
    ok("hybrid-lb-local-not-one/ok", _pc(dataParallelSize=4, dataParallelSizeLocal=2), base=hybrid_lb),
    bad(
        "hybrid-lb-local-not-one/bad",
        _pc(dataParallelSize=4, dataParallelSizeLocal=1),
        PC + "dataParallelSizeLocal",
        "hybrid-lb-local-not-one",
        base=hybrid_lb,
    ),
    # hybrid-lb-local-lt-dp
    ok("hybrid-lb-local-lt-dp/ok", _pc(dataParallelSize=16, dataParallelSizeLocal=8), base=hybrid_lb),
    bad(
        "hybrid-lb-local-lt-dp/bad",
        _pc(dataParallelSize=8, dataParallelSizeLocal=8),
        PC + "dataParallelSizeLocal",
        "hybrid-lb-local-lt-dp",
        base=hybrid_lb,
    ),
    # internal-lb-local
    ok("internal-lb-local/ok", {}, base=internal_lb),
    ok("internal-lb-local/ok-unset", _pc(dataParallelSizeLocal=UNSET), base=internal_lb),
    ok("internal-lb-local/ok-dp1-api-only", _pc(dataParallelSize=1, dataParallelSizeLocal=0)),
    ok("internal-lb-local/ok-torchrun", _pc(dataParallelSize=4, dataParallelSizeLocal=3), base=torchrun),
    bad(
        "internal-lb-local/bad-not-dividing",
        _pc(dataParallelSize=4, dataParallelSizeLocal=3),
        PC + "dataParallelSizeLocal",
        "internal-lb-local",
        base=internal_lb,
    ),
    bad(
        "internal-lb-local/bad-api-only-head",
        _pc(dataParallelSize=4, dataParallelSizeLocal=0),
        PC + "dataParallelSizeLocal",
        "internal-lb-local",
        base=internal_lb,
    ),
    # eplb-needs-ep
    ok("eplb-needs-ep/ok", EPLB_ON),
    bad(
        "eplb-needs-ep/bad",
        {**EPLB_ON, PC + "enableExpertParallel": False},
        PC + "enableEplb",
        "eplb-needs-ep",
    ),
    # eplb-needs-tp-dp
    ok("eplb-needs-tp-dp/ok-tp", {**EPLB_ON, PC + "dataParallelSize": 1, PC + "tensorParallelSize": 2}),
    bad(
        "eplb-needs-tp-dp/bad",
        {**EPLB_ON, PC + "dataParallelSize": 1, PC + "tensorParallelSize": 1},
        PC + "enableEplb",
        "eplb-needs-tp-dp",
    ),
    # redundant-experts-need-eplb (eplbConfig and the deprecated top-level field, which wins)
    ok("redundant-experts-need-eplb/ok", {**EPLB_ON, PC + "eplbConfig.numRedundantExperts": 32}),
    ok("redundant-experts-need-eplb/ok-zero", _pc(eplbConfig={"numRedundantExperts": 0})),
    ok(
        "redundant-experts-need-eplb/ok-deprecated-zero-wins",
        _pc(eplbConfig={"numRedundantExperts": 32}, numRedundantExperts=0),
    ),
    bad(
        "redundant-experts-need-eplb/bad",
        _pc(eplbConfig={"numRedundantExperts": 32}),
        PC + "eplbConfig.numRedundantExperts",
        "redundant-experts-need-eplb",
    ),
    bad(
        "redundant-experts-need-eplb/bad-deprecated",
        _pc(numRedundantExperts=1),
        PC + "eplbConfig.numRedundantExperts",
        "redundant-experts-need-eplb",
    ),
    # dbo-needs-deepep
    ok("dbo-needs-deepep/ok-ll", _pc(enableDbo=True, all2allBackend="deepep_low_latency")),
    ok("dbo-needs-deepep/ok-ht", _pc(enableDbo=True, all2allBackend="deepep_high_throughput")),
    bad("dbo-needs-deepep/bad-unset", _pc(enableDbo=True), PC + "enableDbo", "dbo-needs-deepep"),
    bad(
        "dbo-needs-deepep/bad-naive",
        _pc(enableDbo=True, all2allBackend="naive"),
        PC + "enableDbo",
        "dbo-needs-deepep",
    ),
    # tp-divisible-by-dcp
    ok("tp-divisible-by-dcp/ok", _pc(tensorParallelSize=4, decodeContextParallelSize=2)),
    bad(
        "tp-divisible-by-dcp/bad",
        _pc(tensorParallelSize=4, decodeContextParallelSize=3),
        PC + "decodeContextParallelSize",
        "tp-divisible-by-dcp",
    ),
    # ports-distinct
    ok("ports-distinct/ok", _pc(dataParallelRpcPort=29501, dataParallelMasterPort=29500)),
    bad(
        "ports-distinct/bad",
        _pc(dataParallelRpcPort=29500, dataParallelMasterPort=29500),
        PC + "dataParallelMasterPort",
        "ports-distinct",
    ),
    # ray-dp-backend
    ok("ray-dp-backend/ok-dp1", _pc(dataParallelBackend="ray", dataParallelSize=1)),
    bad(
        "ray-dp-backend/bad",
        _pc(dataParallelBackend="ray", dataParallelSize=2),
        PC + "dataParallelBackend",
        "ray-dp-backend",
    ),
    # ray-dp-needs-ray-executor
    ok("ray-dp-needs-ray-executor/ok", _pc(dataParallelBackend="ray", distributedExecutorBackend="ray")),
    bad(
        "ray-dp-needs-ray-executor/bad",
        _pc(dataParallelBackend="ray", distributedExecutorBackend="mp"),
        PC + "distributedExecutorBackend",
        "ray-dp-needs-ray-executor",
    ),
    # uni-needs-world-one
    ok("uni-needs-world-one/ok", _pc(distributedExecutorBackend="uni", dataParallelSize=4)),
    bad(
        "uni-needs-world-one/bad-tp",
        _pc(distributedExecutorBackend="uni", tensorParallelSize=2),
        PC + "distributedExecutorBackend",
        "uni-needs-world-one",
    ),
    bad(
        "uni-needs-world-one/bad-pp",
        _pc(distributedExecutorBackend="uni", pipelineParallelSize=2),
        PC + "distributedExecutorBackend",
        "uni-needs-world-one",
    ),
    # external-launcher-offline
    ok("external-launcher-offline/ok", {}, base=torchrun),
    bad(
        "external-launcher-offline/bad-external",
        _pc(dataParallelExternalLb=True),
        PC + "distributedExecutorBackend",
        "external-launcher-offline",
        base=torchrun,
    ),
    bad(
        "external-launcher-offline/bad-hybrid",
        _pc(dataParallelHybridLb=True, dataParallelSize=4, dataParallelSizeLocal=2),
        PC + "distributedExecutorBackend",
        "external-launcher-offline",
        base=torchrun,
    ),
    # max-pods (torchrun: one pod per GPU)
    ok("max-pods/ok", _pc(tensorParallelSize=32, dataParallelSize=128), base=torchrun),
    bad(
        "max-pods/bad",
        _pc(tensorParallelSize=32, dataParallelSize=129),
        PC + "dataParallelSize",
        "max-pods",
        base=torchrun,
    ),
    ok("max-pods/ok-not-torchrun", _pc(tensorParallelSize=32, dataParallelSize=4096)),
    # http-port-distinct
    ok("http-port-distinct/ok", {"spec.serving.port": 8080}),
    bad(
        "http-port-distinct/bad-rpc",
        {"spec.serving.port": 29550},
        "spec.serving.port",
        "http-port-distinct",
    ),
    bad(
        "http-port-distinct/bad-master",
        {"spec.serving.port": 1234, PC + "dataParallelMasterPort": 1234},
        "spec.serving.port",
        "http-port-distinct",
    ),
    # serving-container-exists
    ok("serving-container-exists/ok", {"spec.serving.containerName": "vllm"}),
    bad(
        "serving-container-exists/bad",
        {"spec.serving.containerName": "sidecar"},
        "spec.serving.containerName",
        "serving-container-exists",
    ),
    # name
    ok("name/ok-48", {"metadata.name": "a" * 48}),
    ok("name/ok-dash-digit", {"metadata.name": "a-1"}),
    bad("name/bad-49", {"metadata.name": "a" * 49}, "metadata.name", "name"),
    bad("name/bad-digit-first", {"metadata.name": "1abc"}, "metadata.name", "name"),
    bad("name/bad-dot", {"metadata.name": "a.b"}, "metadata.name", "name"),
]

# reserved-args / reserved-env, in containers and init containers
REFUSED_ARGS = [
    "--data-parallel-rank=3",
    "--data-parallel-size",
    "--data_parallel_size=2",
    "--data-parallel_hybrid_lb",
    "--no-data-parallel-external-lb",
    "-tp",
    "-tp=2",
    "-dp=2",
    "-dpl",
    "-dcp=2",
    "-pp",
    "-asc=4",
    "-n=2",
    "--tensor-parallel-size=8",
    "--tensor_parallel_size=8",
    "--port",
    "--port=8000",
    "--portal",
    "--headless",
    "--enable-expert-parallel",
    "--no-enable-eplb",
    "--enable_eplb",
    '--eplb-config={"window_size":1}',
    "--eplb_config.window_size=10",
    "--num-redundant-experts=32",
    "--all2all-backend=naive",
    "--enable-dbo",
    "--dbo-decode-token-threshold=8",
    "--distributed-executor-backend=mp",
    "--disable-custom-all-reduce",
    "--api-server-count=4",
    "--master-addr=x",
    "--master-port=1",
    "--nnodes=2",
    "--node-rank=1",
    "--expert-placement-strategy=linear",
]
ACCEPTED_ARGS = [
    "--trust-remote-code",
    "-q",
    "-q=fp8",
    "--max-model-len=8192",
    "--max_model_len=8192",
    "--served-model-name=dp",
    "--model=deepseek_ai/some_model",
    "--gpu-memory-utilization=0.9",
    "-O3",
    "-tp2",
    "-dpx",
    "--kv-transfer-config={}",
    "data-parallel",
    "port",
]
REFUSED_ENV = [
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "VLLM_PORT",
    "VLLM_HOST_IP",
    "VLLM_ALL2ALL_BACKEND",
    "VLLM_DP_RANK",
    "VLLM_DP_MASTER_IP",
    "NCCL_SOCKET_IFNAME",
    "GLOO_SOCKET_IFNAME",
    "WIDEEP_X",
    "WIDEEP_",
]
ACCEPTED_ENV = ["VLLM_USE_DEEP_GEMM", "RANKS", "MY_RANK", "NCCL_DEBUG", "wideep_x", "VLLM_PORTS", "HF_TOKEN"]


def _arg_cases() -> Iterator[Case]:
    for prefix, where in ((C0, "containers"), (INIT0, "init")):
        init = {"spec.template.spec.initContainers": [{"name": "init", "image": "busybox"}]}
        ctx = init if where == "init" else {}
        for a in REFUSED_ARGS:
            yield bad(
                f"reserved-args/{where}/bad:{a}",
                {**ctx, prefix + "args": ["my/model", a]},
                prefix + "args",
                "reserved-args",
            )
        for a in ACCEPTED_ARGS:
            yield ok(f"reserved-args/{where}/ok:{a}", {**ctx, prefix + "args": ["my/model", a]})
        for e in REFUSED_ENV:
            yield bad(
                f"reserved-env/{where}/bad:{e}",
                {**ctx, prefix + "env": [{"name": "OK", "value": "1"}, {"name": e, "value": "1"}]},
                prefix + "env",
                "reserved-env",
            )
        for e in ACCEPTED_ENV:
            yield ok(f"reserved-env/{where}/ok:{e}", {**ctx, prefix + "env": [{"name": e, "value": "1"}]})


# ---------------------------------------------------------------------------------------------
# Enums, types, nulls, unknown fields.

ENUMS: dict[str, tuple[str, ...]] = {
    PC + "all2allBackend": ALL2ALL_BACKENDS,
    PC + "dataParallelBackend": ("mp", "ray"),
    PC + "distributedExecutorBackend": ("ray", "mp", "uni", "external_launcher"),
    PC + "expertPlacementStrategy": ("linear", "round_robin"),
    "spec.vllmVersion": ("0.11.0", "0.11.1"),
    "spec.startup.readinessPath": ("/health", "/v1/models"),
    "spec.restartPolicy.policy": ("RecreateGroup", "Never"),
}


def _enum_cases() -> Iterator[Case]:
    for path, values in ENUMS.items():
        for v in values:
            yield ok(f"enum/{path.removeprefix('spec.')}={v}", {path: v})
        near = values[0].upper() if values[0].upper() != values[0] else values[0] + ".0"
        for wrong in ("bogus", near, ""):
            yield bad(f"enum/{path.removeprefix('spec.')}={wrong!r}", {path: wrong}, path, contains=values)


SCHEMA_CASES: list[Case] = [
    bad("type/int-as-string", _pc(tensorParallelSize="2"), PC + "tensorParallelSize"),
    bad("type/int-as-bool", _pc(dataParallelSize=True), PC + "dataParallelSize"),
    bad("type/non-integral-float", _pc(tensorParallelSize=2.5), PC + "tensorParallelSize"),
    bad("type/bool-as-string", _pc(enableEplb="true"), PC + "enableEplb"),
    bad("type/bool-as-int", _pc(enableExpertParallel=1), PC + "enableExpertParallel"),
    bad("type/object-as-list", _pc(eplbConfig=[]), PC + "eplbConfig"),
    bad("type/args-as-string", {C0 + "args": "--trust-remote-code"}, C0 + "args"),
    bad(
        "type/label-as-int",
        {"spec.template.metadata": {"labels": {"a": 1}}},
        "spec.template.metadata.labels.a",
    ),
    # kubectl sends YAML's 2.0 as JSON 2
    ok("type/integral-float", _pc(tensorParallelSize=2.0)),
    # null is unset: the API server prunes it and applies the default (null for a field without a default:
    # test_crd.test_null_without_default)
    ok("null/int", _pc(tensorParallelSize=None)),
    ok("null/enum", _pc(dataParallelBackend=None)),
    ok("null/parallel-config", {"spec.parallelConfig": None}),
    ok("null/serving", {"spec.serving": None}),
    bad("missing/template", {"spec.template": UNSET}, "spec.template"),
    bad("missing/containers", {"spec.template.spec.containers": UNSET}, "spec.template.spec.containers"),
    bad("missing/container-name", {C0 + "name": UNSET}, C0 + "name"),
    bad("missing/env-name", {C0 + "env": [{"value": "1"}]}, C0 + "env[0].name"),
    bad("unknown/parallel-config-field", _pc(tensorParallelSizes=2), PC + "tensorParallelSizes"),
    bad("unknown/spec-field", {"spec.replicas": 2}, "spec.replicas"),
    bad("unknown/eplb-field", _pc(eplbConfig={"policy": "default"}), PC + "eplbConfig.policy"),
    ok("unknown/container-field-kept", {C0 + "resources": {"limits": {"nvidia.com/gpu": "8"}}}),
    ok("unknown/pod-field-kept", {"spec.template.spec.nodeSelector": {"gpu": "h100"}}),
    bad(
        "pattern/socket-interface", {"spec.network.socketInterface": "eth 0"}, "spec.network.socketInterface"
    ),
    ok("pattern/socket-interface-ok", {"spec.network.socketInterface": "bond0.100"}),
    bad(
        "pattern/cluster-domain",
        {"spec.network.clusterDomain": "Cluster.Local"},
        "spec.network.clusterDomain",
    ),
    ok("pattern/cluster-domain-ok", {"spec.network.clusterDomain": "k8s.example.com"}),
    # deprecated fields are accepted (with a warning)
    ok("deprecated/num-redundant-experts", {**EPLB_ON, PC + "numRedundantExperts": 16}),
    ok("deprecated/eplb-window-size", _pc(eplbWindowSize=500)),
    ok("deprecated/eplb-step-interval", _pc(eplbStepInterval=100)),
    ok("deprecated/eplb-log-balancedness", _pc(eplbLogBalancedness=True)),
    # whole layouts
    ok("layout/wide-ep", {}, base=wide_ep),
    ok("layout/hybrid", {}, base=hybrid_lb),
    ok("layout/internal", {}, base=internal_lb),
    ok("layout/torchrun", {}, base=torchrun),
    ok("layout/default", {}),
]

# ---------------------------------------------------------------------------------------------
# Both sides of every bound of the spec schema, generated from the schema.

# What else must change for the boundary value itself to be valid (cross-field rules).
BOUND_CONTEXT: dict[str, dict[str, Any]] = {
    PC + "decodeContextParallelSize": _pc(tensorParallelSize=1024),
    PC + "eplbConfig.numRedundantExperts": EPLB_ON,
    PC + "numRedundantExperts": EPLB_ON,
    "spec.serving.containerName": {C0 + "name": "a" * 63},
}
# The same, for the maximum only.
BOUND_CONTEXT_MAX: dict[str, dict[str, Any]] = {
    PC + "dataParallelSizeLocal": _pc(dataParallelSize=4096),
}
# Array paths whose first element must exist before its fields can be set.
ARRAY_SEEDS: dict[str, Any] = {
    "spec.template.spec.initContainers": [{"name": "init", "image": "busybox"}],
    C0 + "env": [{"name": "A", "value": "1"}],
    C0 + "command": ["vllm"],
    C0 + "args": ["my/model"],
    INIT0 + "env": [{"name": "A", "value": "1"}],
    INIT0 + "command": ["sh"],
    INIT0 + "args": ["-c"],
}


def _items(path: str, n: int) -> list[Any]:
    if path.endswith(("containers", "initContainers")):
        return [{"name": f"c{i}"} for i in range(n)]
    if path.endswith(".env"):
        return [{"name": f"E{i}", "value": "1"} for i in range(n)]
    return ["x"] * n


def _seeds(path: str) -> dict[str, Any]:
    return {p: v for p, v in ARRAY_SEEDS.items() if path.startswith(p + "[0]")}


def _bound_cases() -> Iterator[Case]:
    def walk(node: dict[str, Any], path: str) -> Iterator[Case]:
        for name, sub in node.get("properties", {}).items():
            yield from visit(sub, f"{path}.{name}")

    def visit(sub: dict[str, Any], p: str) -> Iterator[Case]:
        ctx = {**_seeds(p), **BOUND_CONTEXT.get(p, {})}
        typ = sub.get("type")
        if typ == "integer":
            if "minimum" in sub:
                lo = sub["minimum"]
                yield ok(f"bound/{p}={lo}", {**ctx, p: lo})
                yield bad(f"bound/{p}={lo - 1}", {**ctx, p: lo - 1}, p)
            if "maximum" in sub:
                hi = sub["maximum"]
                ctx = {**ctx, **BOUND_CONTEXT_MAX.get(p, {})}
                yield ok(f"bound/{p}={hi}", {**ctx, p: hi})
                yield bad(f"bound/{p}={hi + 1}", {**ctx, p: hi + 1}, p)
        elif typ == "string":
            if sub.get("minLength"):
                yield bad(f"bound/{p}=''", {**ctx, p: ""}, p)
            if "maxLength" in sub:
                n = sub["maxLength"]
                fill = "1" if "pattern" in sub and not re.fullmatch(sub["pattern"], "a") else "a"
                yield ok(f"bound/{p}=len{n}", {**ctx, p: fill * n})
                yield bad(f"bound/{p}=len{n + 1}", {**ctx, p: fill * (n + 1)}, p)
        elif typ == "array":
            if sub.get("minItems"):
                yield bad(f"bound/{p}=[]", {**ctx, p: []}, p)
            if "maxItems" in sub:
                n = sub["maxItems"]
                yield ok(f"bound/{p}=items{n}", {**ctx, p: _items(p, n)})
                yield bad(f"bound/{p}=items{n + 1}", {**ctx, p: _items(p, n + 1)}, p)
            yield from visit(sub["items"], p + "[0]")
        elif typ == "object":
            yield from walk(sub, p)

    yield from walk(spec_schema(), "spec")


BOUND_CASES: list[Case] = list(_bound_cases())
CASES: list[Case] = [*RULE_CASES, *_arg_cases(), *_enum_cases(), *SCHEMA_CASES, *BOUND_CASES]
CASE_IDS = [c.id for c in CASES]


# ---------------------------------------------------------------------------------------------
# Checking a case against pydantic


def describe(verdict: Verdict) -> str:
    return "\n".join(f"{e.path}: {e.message} [{e.rule}]" for e in verdict.errors) or "(valid)"


def check_pydantic(case: Case) -> Verdict:
    verdict = validate_object(case.obj())
    if case.ok:
        assert verdict.ok, f"{case.id}: expected valid, got:\n{describe(verdict)}"
        return verdict
    assert not verdict.ok, f"{case.id}: expected an error at {case.path}, got a valid verdict"
    at_path = [e for e in verdict.errors if e.path == case.path]
    assert at_path, f"{case.id}: no error at {case.path}:\n{describe(verdict)}"
    if case.rule != "schema":
        assert any(e.rule == case.rule for e in at_path), (
            f"{case.id}: no error of rule {case.rule} at {case.path}:\n{describe(verdict)}"
        )
    text = " ".join(e.message for e in at_path)
    for part in case.contains:
        assert part in text, f"{case.id}: {part!r} not in {text!r}"
    return verdict
