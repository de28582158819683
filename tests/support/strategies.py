"""Hypothesis strategies of ParallelDeployments near the rules' boundaries (``objects()``).

Sizes 0..20, DP-local -1..20, every boolean, enums with an unknown value and unset, colliding ports, a few
reserved args and env names, bad names: a third of the objects a rule case of the table (either side of its
boundary, maybe one rule field redrawn), a third a valid layout with one to three rule fields redrawn near
their values, a third every field drawn independently (mostly refused, by several rules at once).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.support.builders import (
    IMAGE,
    UNSET,
    external_lb,
    hybrid_lb,
    internal_lb,
    parallel_deployment,
    torchrun,
    wide_ep,
)
from tests.support.rule_cases import RULE_CASES
from wideep.api.models import ALL2ALL_BACKENDS

ABSENT = object()


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Unset half of the time."""
    return st.one_of(st.just(ABSENT), strategy)


def pick(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


def sizes(*nice: int, lo: int = 0, hi: int = 20) -> st.SearchStrategy[int]:
    """Mostly the values the rules care about, sometimes anything in lo..hi."""
    return st.one_of(st.sampled_from(nice), st.sampled_from(nice), st.integers(lo, hi))


def enum(values: tuple[str, ...] | list[str]) -> st.SearchStrategy[str]:
    """A valid value most of the time, else an unknown one."""
    return st.sampled_from([*values, *values, "bogus"])


PORTS = pick(29500, 29550, 8000, 29500, 29550, 8000, 1, 65535, 0, 65536)
ARGS = pick(
    "my/model",
    "--trust-remote-code",
    "-q",
    "--max-model-len=8192",
    "--max_model_len=8192",
    "-tp2",
    "--port=8000",
    "--portal",
    "-tp",
    "-dp=2",
    "--data-parallel-rank=3",
    "--data_parallel_size=2",
    "--headless",
    "--eplb_config.window_size=3",
    "--enable-expert-parallel",
)
ENV_NAMES = pick("HF_TOKEN", "NCCL_DEBUG", "RANKS", "RANK", "VLLM_PORT", "WIDEEP_X", "MASTER_ADDR")
NAMES = pick("fuzz", "fuzz", "fuzz", "ok-1", "a" * 48, "a" * 49, "9lives", "Upper", "dot.ted")


def _fields(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not ABSENT}


@st.composite
def eplb_configs(draw: st.DrawFn) -> dict[str, Any]:
    return _fields(
        numRedundantExperts=draw(maybe(pick(0, 0, 1, 32, -1))),
        windowSize=draw(maybe(pick(1, 1000, 0))),
        stepInterval=draw(maybe(pick(1, 3000, 0))),
        logBalancedness=draw(maybe(st.booleans())),
    )


@st.composite
def parallel_configs(draw: st.DrawFn) -> dict[str, Any]:
    b = st.booleans()
    return _fields(
        pipelineParallelSize=draw(maybe(sizes(1, 1, 2, 0, hi=4))),
        tensorParallelSize=draw(maybe(sizes(1, 1, 2, 4, 8, 3, 0))),
        dataParallelSize=draw(maybe(sizes(1, 2, 4, 8, 16, 6, 0, 4096, 4097))),
        dataParallelSizeLocal=draw(maybe(sizes(0, 1, 2, 4, 8, 16, 3, -1, lo=-1))),
        dataParallelBackend=draw(maybe(enum(["mp", "ray"]))),
        dataParallelRpcPort=draw(maybe(PORTS)),
        dataParallelMasterPort=draw(maybe(PORTS)),
        dataParallelExternalLb=draw(maybe(b)),
        dataParallelHybridLb=draw(maybe(b)),
        enableExpertParallel=draw(maybe(b)),
        enableEplb=draw(maybe(b)),
        eplbConfig=draw(maybe(eplb_configs())),
        expertPlacementStrategy=draw(maybe(enum(["linear", "round_robin"]))),
        all2allBackend=draw(maybe(enum(ALL2ALL_BACKENDS))),
        enableDbo=draw(maybe(b)),
        decodeContextParallelSize=draw(maybe(sizes(1, 1, 2, 4, 3, 0, hi=8))),
        distributedExecutorBackend=draw(maybe(enum(["ray", "mp", "uni", "external_launcher"]))),
        disableCustomAllReduce=draw(maybe(b)),
        numRedundantExperts=draw(maybe(pick(0, 8, -1))),
        eplbWindowSize=draw(maybe(pick(10, 0))),
    )


@st.composite
def containers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": IMAGE}
    args = draw(maybe(st.lists(ARGS, max_size=3)))
    if args is not ABSENT:
        c["args"] = args
    env = draw(maybe(st.lists(ENV_NAMES, max_size=2)))
    if env is not ABSENT:
        c["env"] = [{"name": n, "value": "1"} for n in env]
    return c


@st.composite
def wild_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Every field drawn independently: mostly refused, by several rules at once."""
    serving = _fields(
        port=draw(maybe(PORTS)),
        containerName=draw(maybe(st.sampled_from(["vllm", "sidecar"]))),
        apiServerCount=draw(maybe(pick(1, 2, 0))),
    )
    extra: dict[str, Any] = {}
    version = draw(maybe(enum(["0.11.0", "0.11.1"])))
    if version is not ABSENT:
        extra["vllmVersion"] = version
    if serving:
        extra["serving"] = serving
    init = draw(st.one_of(st.none(), containers("init")))
    return parallel_deployment(
        draw(NAMES),
        parallel_config=draw(parallel_configs()),
        containers=[draw(containers("vllm"))],
        init_containers=[init] if init is not None else None,
        **extra,
    )


LAYOUTS = [parallel_deployment, external_lb, hybrid_lb, internal_lb, torchrun, wide_ep]


# Values of the fields the cross-field rules read, near the current ones and mostly valid: a near-valid
# object then tends to break one rule at a time, which is where a CEL/Python difference would show.
def rule_fields(pc: dict[str, Any]) -> dict[str, st.SearchStrategy[Any]]:
    dp = int(pc.get("dataParallelSize", 1))
    local = pc.get("dataParallelSizeLocal")
    near_local = int(local) if isinstance(local, int) and local > 0 else 2
    tp = int(pc.get("tensorParallelSize", 1))
    return {
        "dataParallelSize": pick(1, 2, 4, 16, dp * 2, near_local, near_local + 1, near_local * 3),
        "dataParallelSizeLocal": pick(UNSET, 0, 1, 2, dp, max(dp // 2, 1), dp + 1, 3),
        "tensorParallelSize": pick(1, 2, 4, 3, 64),
        "pipelineParallelSize": pick(1, 2),
        "decodeContextParallelSize": pick(1, 2, tp, tp + 1),
        "dataParallelExternalLb": st.booleans(),
        "dataParallelHybridLb": st.booleans(),
        "enableExpertParallel": st.booleans(),
        "enableEplb": st.booleans(),
        "enableDbo": st.booleans(),
        "eplbConfig": pick({}, {"numRedundantExperts": 32}),
        "numRedundantExperts": pick(UNSET, 0, 8),
        "all2allBackend": pick(UNSET, "deepep_low_latency", "deepep_high_throughput", "naive"),
        "dataParallelBackend": pick("mp", "ray"),
        "distributedExecutorBackend": pick(UNSET, "mp", "uni", "ray", "external_launcher"),
        "dataParallelRpcPort": pick(29550, 29500, 8000),
        "dataParallelMasterPort": pick(29500, 29550, 8000),
    }


# the DP layout fields take part in most rules: drawn more often
RULE_KEYS = [
    *["dataParallelSize", "dataParallelSizeLocal", "dataParallelExternalLb", "dataParallelHybridLb"] * 3,
    *rule_fields({}),
]


@st.composite
def near_valid_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A valid layout with one to three rule fields redrawn near their values, sometimes its container, HTTP
    port, serving container or name."""
    obj = draw(st.sampled_from(LAYOUTS))()
    spec = obj["spec"]
    pc = spec.setdefault("parallelConfig", {})
    for _ in range(draw(pick(1, 1, 2, 3))):
        key = draw(st.sampled_from(RULE_KEYS))
        value = draw(rule_fields(pc)[key])
        if value is UNSET:
            pc.pop(key, None)
        else:
            pc[key] = value
    other = draw(pick(*["none"] * 6, "container", "port", "containerName", "name"))
    if other == "container":
        spec["template"]["spec"]["containers"] = [draw(containers("vllm"))]
    elif other == "port":
        spec["serving"] = {"port": draw(pick(8000, 29500, 29550, 8080))}
    elif other == "containerName":
        spec["serving"] = {"containerName": draw(pick("vllm", "sidecar"))}
    elif other == "name":
        obj["metadata"]["name"] = draw(NAMES)
    return obj


@st.composite
def boundary_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A cross-field rule case of the table (either side of its boundary), maybe with one rule field redrawn."""
    obj = draw(st.sampled_from(RULE_CASES)).obj()
    if draw(st.booleans()):
        pc = obj["spec"].setdefault("parallelConfig", {})
        key = draw(st.sampled_from(RULE_KEYS))
        value = draw(rule_fields(pc)[key])
        if value is UNSET:
            pc.pop(key, None)
        else:
            pc[key] = value
    return obj


def objects() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(boundary_objects(), boundary_objects(), near_valid_objects(), wild_objects())
