"""Property test: for random ParallelDeployments, the real API server and ``validate_object`` agree.

Hypothesis draws specs near the rules' boundaries (sizes 0..20, DP-local -1..20, every boolean, enums with
an unknown value and unset, colliding ports, a few reserved args and env names, bad names) and sends each
to the API server with ``dryRun=All&fieldValidation=Strict`` over one kept-alive connection. For every
example: same accept/refuse verdict; a refusal names at least one field path pydantic names too; an
accepted object is stored with the defaults pydantic applies.

``WIDEEP_FUZZ_EXAMPLES`` raises the number of examples (default 150).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wideep.api.models import ALL2ALL_BACKENDS
from wideep.api.validate import validate_object

from .conftest import DryRun, DryRunClient
from .factories import (
    IMAGE,
    UNSET,
    external_lb,
    hybrid_lb,
    internal_lb,
    parallel_deployment,
    torchrun,
    wide_ep,
)
from .test_rules import RULE_CASES

MAX_EXAMPLES = int(os.environ.get("WIDEEP_FUZZ_EXAMPLES", "150"))

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


PATH_IN_MESSAGE = re.compile(r"(?:^|[\s\[\"'.(])((?:spec|metadata)\.[A-Za-z0-9_.\[\]]+)")


def apiserver_paths(result: DryRun) -> set[str]:
    """Field paths the API server names: its causes, and any path in the message (strict decoding errors)."""
    paths = {p for p in result.fields() if p and p != "<nil>"}
    paths |= {m.rstrip(".:") for m in PATH_IN_MESSAGE.findall(result.message)}
    return paths


def compare(dry_run: DryRunClient, obj: dict[str, Any]) -> str:
    verdict = validate_object(obj)
    result = dry_run(obj)
    mine = sorted(f"{e.path}: {e.message} [{e.rule}]" for e in verdict.errors)
    detail = f"\nobject: {obj}\npydantic: {mine or 'valid'}\nAPI server ({result.status}): {result.message}"
    assert result.status in (201, 400, 422), detail
    assert verdict.ok == result.accepted, "verdicts differ" + detail
    if verdict.ok:
        assert verdict.obj is not None
        model = verdict.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert result.body["spec"]["parallelConfig"] == model["parallelConfig"], "defaults differ" + detail
        return "accepted"
    common = {e.path for e in verdict.errors} & apiserver_paths(result)
    assert common, "no field path named by both" + detail
    return "refused"


def test_apiserver_agrees_with_pydantic(dry_run: DryRunClient) -> None:
    stats: Counter[str] = Counter()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    @given(obj=objects())
    def check(obj: dict[str, Any]) -> None:
        stats[compare(dry_run, obj)] += 1

    check()
    total = sum(stats.values())
    print(f"\n[agreement] {total} examples: {dict(stats)}")
    # the strategy must exercise both verdicts
    assert stats["accepted"] >= total // 10, stats
    assert stats["refused"] >= total // 10, stats


@pytest.mark.parametrize(
    "changes",
    [
        {"tensorParallelSize": 0},
        {"dataParallelSize": 4, "dataParallelSizeLocal": 3},
        {"dataParallelExternalLb": True},
        {"all2allBackend": "bogus", "enableDbo": True},
    ],
    ids=["bound", "rule", "rule-external", "enum+rule"],
)
def test_compare_reports_common_path(dry_run: DryRunClient, changes: dict[str, Any]) -> None:
    """The comparison itself: refused by both, with a field path both name."""
    assert compare(dry_run, parallel_deployment(parallel_config=changes)) == "refused"


def test_apiserver_paths_parse_strict_decoding_errors() -> None:
    result = DryRun(
        400,
        {
            "message": 'ParallelDeployment in version "v1alpha1" cannot be handled as a ParallelDeployment: '
            'strict decoding error: unknown field "spec.parallelConfig.foo"'
        },
        [],
    )
    assert apiserver_paths(result) == {"spec.parallelConfig.foo"}
