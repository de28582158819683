"""Property tests of the planner over random VALID specs of every layout (hypothesis).

The specs come from ``factories.valid_deployments`` (valid by construction: DP up to 256, TP and PP up to 8,
names up to the API's 48 characters, every option) and are first checked with ``validate_object``. The
properties are read from the rendered objects (args, env, labels, selectors), not from the planner's own
bookkeeping, so a planner that disagrees with itself fails:

* pod indices cover 0..n-1 exactly once;
* the DP ranks the pods' vLLM args host cover 0..DP-1 exactly once (torchrun: each pod's dp-rank label is
  ``RANK // (world_size // DP)`` with world_size = PP*TP*DP, and RANK covers 0..world_size-1 once);
* names are unique, valid DNS-1123 labels of at most 63 characters (pods, hostnames), Services are
  DNS-1035 labels (they start with a letter), every selector selects the pods it should;
* GPU requests add up to DP*PP*TP;
* every pod carries identical hash-relevant (common) args, equal to the spec's values.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.builders import Obj, external_lb, hybrid_lb, torchrun
from wideep.api import constants as c
from wideep.api import derived
from wideep.api.derived import Layout
from wideep.api.models import ParallelDeployment
from wideep.planning.planner import GroupPlan

from .factories import (
    DNS1035_LABEL,
    DNS1123_LABEL,
    LAYOUT_NAMES,
    TORCH_ENV,
    args_of,
    env_of,
    env_value,
    flag_value,
    gpus,
    planned,
    serving_container,
    valid_deployments,
)

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Flags that differ from pod to pod; everything else a serving pod gets must be identical.
PER_POD_FLAGS = {
    "--data-parallel-rank": 1,
    "--data-parallel-start-rank": 1,
    "--data-parallel-address": 1,
    "--headless": 0,
    "--port": 1,
    "--api-server-count": 1,
}
EXPECTED_LAYOUT = {
    "external": Layout.EXTERNAL_LB,
    "hybrid": Layout.HYBRID_LB,
    "internal": Layout.INTERNAL_LB,
    "single": Layout.SINGLE,
    "torchrun": Layout.TORCHRUN,
}


def hosted_ranks(args: list[str]) -> list[int]:
    """The DP ranks a `vllm serve` with these args hosts (docs/vllm-wiring.md §2)."""
    dp = int(flag_value(args, "--data-parallel-size") or 1)
    rank = flag_value(args, "--data-parallel-rank")
    if rank is not None:
        return [int(rank)]
    local = flag_value(args, "--data-parallel-size-local")
    start = int(flag_value(args, "--data-parallel-start-rank") or 0)
    n = dp if local is None else int(local)
    return list(range(start, start + n))


def without_per_pod_flags(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = 0
    for a in args:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in PER_POD_FLAGS:
            skip = PER_POD_FLAGS[name] if "=" not in a else 0
            continue
        out.append(a)
    return out


def world(pdep: ParallelDeployment) -> int:
    pc = pdep.spec.parallel_config
    return pc.data_parallel_size * pc.pipeline_parallel_size * pc.tensor_parallel_size


# ------------------------------------------------------------------------------------- properties


def check_pod_indices(g: GroupPlan) -> None:
    indices = sorted(int(p.body["metadata"]["labels"][c.LABEL_POD_INDEX]) for p in g.pods)
    assert indices == list(range(len(g.pods))), indices
    for p in g.pods:
        assert p.body["metadata"]["name"] == f"{g.name}-{p.body['metadata']['labels'][c.LABEL_POD_INDEX]}"


def check_dp_ranks(pdep: ParallelDeployment, g: GroupPlan) -> None:
    pc = pdep.spec.parallel_config
    dp = pc.data_parallel_size
    if g.layout == Layout.TORCHRUN:
        ws = world(pdep)
        ranks = []
        for p in g.pods:
            ctr = serving_container(pdep, p)
            rank = int(env_value(ctr, "RANK") or -1)
            ranks.append(rank)
            assert env_value(ctr, "WORLD_SIZE") == str(ws)
            assert env_value(ctr, "LOCAL_RANK") == "0"
            assert env_value(ctr, "MASTER_ADDR") == g.master_address
            assert env_value(ctr, "MASTER_PORT") == str(pc.data_parallel_master_port)
            # The seed's rule, as vLLM's ParallelConfig.__post_init__ computes it under external_launcher.
            assert p.body["metadata"]["labels"][c.LABEL_DP_RANK] == str(rank // (ws // dp))
        assert sorted(ranks) == list(range(ws))
        return
    hosted: list[int] = []
    for p in g.pods:
        args = args_of(pdep, p)
        mine = hosted_ranks(args)
        assert mine, f"{p.name} hosts no DP rank"
        assert p.body["metadata"]["labels"][c.LABEL_DP_RANK] == str(mine[0])
        assert env_value(serving_container(pdep, p), "WIDEEP_DP_RANK_START") == str(mine[0])
        assert env_value(serving_container(pdep, p), "WIDEEP_DP_SIZE_LOCAL") == str(len(mine))
        assert not set(TORCH_ENV) & set(env_of(serving_container(pdep, p)))
        hosted += mine
    assert sorted(hosted) == list(range(dp)), f"DP ranks hosted: {sorted(hosted)}"


def _dns_label(value: str, pattern: str) -> bool:
    return len(value) <= 63 and re.fullmatch(pattern, value) is not None


def _selects(svc: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def check_names(pdep: ParallelDeployment, g: GroupPlan) -> None:
    ns = pdep.metadata.get("namespace", "default")
    pod_names = [p.body["metadata"]["name"] for p in g.pods]
    svc_names = [s["metadata"]["name"] for s in g.services]
    assert len(set(pod_names)) == len(pod_names)
    assert len(set(svc_names)) == len(svc_names)
    for n in pod_names:
        assert _dns_label(n, DNS1123_LABEL), n
    for n in svc_names:
        assert _dns_label(n, DNS1035_LABEL), n
    headless = [s for s in g.services if s["spec"].get("publishNotReadyAddresses")]
    assert [s["metadata"]["name"] for s in headless] == [f"{g.name}-ranks"]
    assert headless[0]["spec"]["clusterIP"] == "None"
    pod_labels = {p.index: p.body["metadata"]["labels"] for p in g.pods}
    for p in g.pods:
        spec = p.body["spec"]
        assert spec["hostname"] == p.body["metadata"]["name"]
        assert _dns_label(spec["hostname"], DNS1123_LABEL)
        assert spec["subdomain"] == headless[0]["metadata"]["name"]
        assert _selects(headless[0], pod_labels[p.index])
    # Rank 0's FQDN: every DNS label of it valid (the namespace and cluster domain are the user's).
    assert g.master_address == f"{g.name}-0.{g.name}-ranks.{ns}.svc.{pdep.spec.network.cluster_domain}"
    for part in g.master_address.split(".")[:3]:
        assert _dns_label(part, DNS1123_LABEL), part
    for item in g.objects():
        meta = item["metadata"]
        assert meta["namespace"] == ns
        for key, value in meta["labels"].items():
            assert re.fullmatch(LABEL_VALUE, value), (key, value)
            assert len(value) <= 63, (key, value)
    # Every Service selects exactly the pods it is for.
    for s in g.services:
        selected = [i for i, labels in pod_labels.items() if _selects(s, labels)]
        n = s["metadata"]["name"]
        if n == f"{g.name}-master":
            assert selected == [0]
        elif n == f"{g.name}-http":
            assert selected == [p.index for p in g.pods if p.serves_http]
            assert selected, "the HTTP Service selects no pod"
        else:
            assert n == f"{g.name}-ranks", n
    # Three Services whatever the size (two in the torchrun layout, which serves no HTTP): a rank is
    # addressed by its pod's DNS name under the headless Service.
    assert len(svc_names) == (2 if g.layout == Layout.TORCHRUN else 3)


def check_gpus(pdep: ParallelDeployment, g: GroupPlan) -> None:
    total = 0
    for p in g.pods:
        requests, limits = gpus(serving_container(pdep, p))
        assert requests == limits == g.gpus_per_pod
        total += requests
    assert total == world(pdep)


def check_common_args(pdep: ParallelDeployment, g: GroupPlan) -> None:
    pc = pdep.spec.parallel_config
    cfg_hash = derived.vllm_config_hash(pc)
    assert {p.body["metadata"]["labels"][c.LABEL_CONFIG_HASH] for p in g.pods} == {cfg_hash[:32]}
    user = list(pdep.spec.template.spec.containers[0].args or [])
    commons = set()
    for p in g.pods:
        ctr = serving_container(pdep, p)
        args = args_of(pdep, p)
        assert args[: len(user)] == user, "user args come first"
        assert env_value(ctr, "WIDEEP_CONFIG_HASH") == cfg_hash
        env = env_of(ctr)
        assert "VLLM_PORT" not in env
        assert env["VLLM_HOST_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert p.body["spec"]["enableServiceLinks"] is False
        if g.layout == Layout.TORCHRUN:
            assert args == user
            continue
        assert ("--port" in args) is p.serves_http
        assert ("--headless" in args) is (not p.serves_http)
        commons.add(json.dumps(without_per_pod_flags(args)))
        # The hash-relevant flags carry the spec's values (vLLM refuses a rank whose hash differs).
        assert flag_value(args, "--tensor-parallel-size") == str(pc.tensor_parallel_size)
        assert flag_value(args, "--pipeline-parallel-size") == str(pc.pipeline_parallel_size)
        dp_flag = flag_value(args, "--data-parallel-size")
        assert dp_flag == (None if g.layout == Layout.SINGLE else str(pc.data_parallel_size))
        assert ("--enable-expert-parallel" in args) is pc.enable_expert_parallel
        assert ("--enable-eplb" in args) is pc.enable_eplb
        eplb = flag_value(args, "--eplb-config")
        if pc.enable_eplb:
            assert eplb is not None
            assert json.loads(eplb) == derived.effective_eplb(pc).model_dump()
        else:
            assert eplb is None
        if pdep.spec.vllm_version == "0.11.0":
            assert flag_value(args, "--all2all-backend") is None
            assert "--data-parallel-external-lb" not in args
            assert env_value(ctr, "VLLM_ALL2ALL_BACKEND") == pc.all2all_backend
        else:
            assert flag_value(args, "--all2all-backend") == pc.all2all_backend
            assert ("--data-parallel-external-lb" in args) is (g.layout == Layout.EXTERNAL_LB)
            assert "VLLM_ALL2ALL_BACKEND" not in env
        assert ("--data-parallel-hybrid-lb" in args) is (g.layout == Layout.HYBRID_LB)
    assert len(commons) <= 1, f"pods differ in common args: {commons}"


def check_plan(obj: Obj, layout: str) -> None:
    pdep, g = planned(obj)
    assert g.layout == EXPECTED_LAYOUT[layout]
    check_pod_indices(g)
    check_dp_ranks(pdep, g)
    check_names(pdep, g)
    check_gpus(pdep, g)
    check_common_args(pdep, g)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_plan_properties(layout: str, data: st.DataObject) -> None:
    check_plan(data.draw(valid_deployments(layout), label="deployment"), layout)


@PROPERTY_SETTINGS
@given(obj=valid_deployments())
def test_plan_properties_any_layout(obj: Obj) -> None:
    pc = obj["spec"]["parallelConfig"]
    if pc.get("distributedExecutorBackend") == "external_launcher":
        layout = "torchrun"
    elif pc.get("dataParallelExternalLb"):
        layout = "external"
    elif pc.get("dataParallelHybridLb"):
        layout = "hybrid"
    elif pc.get("dataParallelSize", 1) == 1:
        layout = "single"
    else:
        layout = "internal"
    check_plan(obj, layout)


# ------------------------------------------------------------------- the checks can fail (mutants)


def _mutant(obj: Obj, mutate: Any) -> None:
    pdep, g = planned(obj)
    mutate(pdep, g)
    check_pod_indices(g)
    check_dp_ranks(pdep, g)
    check_names(pdep, g)
    check_gpus(pdep, g)
    check_common_args(pdep, g)


def _args(g: GroupPlan, i: int) -> list[str]:
    args: list[str] = g.pods[i].body["spec"]["containers"][0]["args"]
    return args


def _set_flag(args: list[str], flag: str, value: str) -> None:
    args[args.index(flag) + 1] = value


MUTANTS = {
    "duplicate-rank": lambda p, g: _set_flag(_args(g, 2), "--data-parallel-rank", "1"),
    "overlapping-hybrid": lambda p, g: _set_flag(_args(g, 1), "--data-parallel-start-rank", "0"),
    "torchrun-rank-rule": lambda p, g: g.pods[5].body["metadata"]["labels"].update({c.LABEL_DP_RANK: "2"}),
    "duplicate-pod-index": lambda p, g: g.pods[1].body["metadata"]["labels"].update({c.LABEL_POD_INDEX: "0"}),
    "long-service-name": lambda p, g: g.services[0]["metadata"].update(name="s" * 64),
    "service-starts-with-digit": lambda p, g: g.services[1]["metadata"].update(name="1x-master"),
    "gpu-sum": lambda p, g: (
        g.pods[0].body["spec"]["containers"][0]["resources"]["requests"].update({"nvidia.com/gpu": "3"})
    ),
    "differing-common-arg": lambda p, g: _set_flag(_args(g, 1), "--tensor-parallel-size", "4"),
    "dangling-master-service": lambda p, g: g.services[1]["spec"]["selector"].update(
        {c.LABEL_POD_INDEX: "9"}
    ),
}
MUTANT_OBJ = {
    "overlapping-hybrid": "hybrid",
    "torchrun-rank-rule": "torchrun",
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_checks_catch_a_broken_plan(mutant: str) -> None:
    kind = MUTANT_OBJ.get(mutant, "external")
    obj = {
        "external": lambda: external_lb("m", dp=4, tp=2),
        "hybrid": lambda: hybrid_lb("m", dp=16, local=4),
        "torchrun": lambda: torchrun("m", dp=2, tp=2, pipelineParallelSize=2),
    }[kind]()
    _mutant(obj, lambda p, g: None)  # the unmutated plan passes
    with pytest.raises(AssertionError):
        _mutant(obj, MUTANTS[mutant])
