"""Every rendered serving pod's args, parsed by vLLM's OWN parser (the real vllm==0.11.1 from PyPI).

The vLLM package pins a torch and a pydantic that clash with ours, so it lives in its own virtualenv
outside the repository (``bash tools/vllm-venv.sh``, cached per machine) and ``vllm_parse_args.py`` runs
there in ONE subprocess for every case (importing vLLM takes ~20 s). What it runs, per pod:

* ``vllm serve``'s parser (``FlexibleArgumentParser`` + ``ServeSubcommand`` → ``make_arg_parser``) on the
  pod's args, ``$(VLLM_HOST_IP)`` replaced by 10.0.0.1 as the kubelet would; a flag vLLM does not know, a
  bad value or a bad JSON fails the parse;
* ``AsyncEngineArgs.from_cli_args`` and vLLM's own ``create_engine_config`` DP resolution (arg_utils
  L1456-L1585). That function needs a model config from the Hugging Face hub and a GPU platform before it
  reaches the DP code, so the helper stubs exactly those model-dependent steps and intercepts the
  ``ParallelConfig(...)`` it builds: those keyword arguments are the resolved DP fields (rank, local
  size, address, RPC port, external/hybrid LB);
* the real ``ParallelConfig`` from them (vLLM's CPU platform; EPLB's CUDA-only check answered as on
  CUDA), for the effective all2all backend, ``world_size`` and ``compute_hash()``;
* the checks ``run_headless`` / ``run_multi_api_server`` make before launching.

The test compares all of it with the PLAN (pod ranks, layout, spec), not with the args it rendered.
As a cross-check, ``reproduce_dp_resolution`` re-derives the DP fields from the parsed EngineArgs by the
rules of docs/vllm-wiring.md §1-§2 and must agree with vLLM's own resolution; if a future
vLLM moved the code the stubs rely on, the helper reports it as an error and the test fails.

Torchrun (external_launcher) pods run the user's script, not ``vllm serve``: for them vLLM's
``ParallelConfig`` is built with the pod's RANK env, so vLLM itself computes the pod's DP rank.

The 0.11.1 parser also reads the 0.11.0 profile's args (0.11.0 has a subset of these flags, and its
all2all backend comes from the pod's VLLM_ALL2ALL_BACKEND env, which the helper sets).

The test skips when the vLLM virtualenv is not built, unless WIDEEP_REQUIRE_VLLM is set (CI sets it):
then it builds it with tools/vllm-venv.sh if missing, and any problem is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings

from tests.support import ROOT
from tests.support.builders import (
    Obj,
    example_paths,
    external_lb,
    internal_lb,
    parallel_deployment,
)
from wideep.api import derived
from wideep.api.derived import Layout
from wideep.api.models import ParallelDeployment
from wideep.planning.planner import GroupPlan, PodPlan

from .factories import LAYOUT_NAMES, args_of, planned, serving_container, valid_deployments

VLLM_VERSION = "0.11.1"
HELPER = Path(__file__).with_name("vllm_parse_args.py")
HOST_IP = "10.0.0.1"
REQUIRE = os.environ.get("WIDEEP_REQUIRE_VLLM", "") not in ("", "0")
N_GENERATED = 5  # per layout
# vLLM's own defaults where the planner passes no flag (EngineArgs / ParallelConfig, v0.11.1).
VLLM_EPLB_DEFAULT = {
    "window_size": 1000,
    "step_interval": 3000,
    "num_redundant_experts": 0,
    "log_balancedness": False,
}
VLLM_ENV = ("VLLM_ALL2ALL_BACKEND", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------------------------ the specs


def _extra_specs() -> dict[str, Obj]:
    """Layouts and options the examples do not cover."""
    old = external_lb("old", dp=4, tp=2, all2allBackend="deepep_low_latency", enableEplb=True)
    old["spec"]["vllmVersion"] = "0.11.0"
    return {
        "internal-lb": internal_lb("int", dp=6, local=2, tensorParallelSize=2),
        "internal-lb-api-servers": parallel_deployment(
            "int-asc",
            parallel_config={"dataParallelSize": 8, "dataParallelSizeLocal": 4, "enableExpertParallel": True},
            serving={"apiServerCount": 4, "port": 8100},
        ),
        "internal-lb-one-pod": parallel_deployment("int-one", parallel_config={"dataParallelSize": 4}),
        "single-dp1": parallel_deployment(
            "one", parallel_config={"tensorParallelSize": 4, "pipelineParallelSize": 2}
        ),
        "external-vllm-0.11.0": old,
        "external-deprecated-eplb-fields": external_lb(
            "dep",
            dp=8,
            enableEplb=True,
            eplbConfig={"windowSize": 10},
            numRedundantExperts=16,
            eplbLogBalancedness=True,
        ),
        "external-options": external_lb(
            "opts",
            dp=4,
            tp=4,
            pipelineParallelSize=2,
            decodeContextParallelSize=2,
            expertPlacementStrategy="round_robin",
            disableCustomAllReduce=True,
            distributedExecutorBackend="mp",
            all2allBackend="deepep_high_throughput",
            enableDbo=True,
            dboDecodeTokenThreshold=0,
            dboPrefillTokenThreshold=64,
        ),
        "hybrid-pp": parallel_deployment(
            "hyb-pp",
            parallel_config={
                "dataParallelSize": 12,
                "dataParallelSizeLocal": 4,
                "dataParallelHybridLb": True,
                "pipelineParallelSize": 2,
                "enableExpertParallel": True,
                "all2allBackend": "pplx",
            },
            serving={"apiServerCount": 4},
        ),
    }


def _generated_specs(layout: str, n: int) -> list[Obj]:
    """``n`` specs of ``layout`` from the property tests' strategy, the same ones every run (derandomized)."""
    found: list[Obj] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(obj=valid_deployments(layout))
    def collect(obj: Obj) -> None:
        found.append(obj)

    collect()
    return found


@dataclass(frozen=True)
class Planned:
    pdep: ParallelDeployment
    group: GroupPlan
    pods: list[PodPlan]
    """The pods sent to vLLM: all of them for examples and extras, a sample for generated specs."""


def _plan(obj: Obj, sample: bool) -> Planned:
    pdep, g = planned(obj)
    pods = g.pods
    if sample and len(pods) > 4:
        pods = [pods[i] for i in sorted({0, 1, len(pods) // 2, len(pods) - 1})]
    return Planned(pdep, g, pods)


EXAMPLE_IDS = [f"example-{p.stem}" for p in example_paths()]
EXTRA_IDS = [f"extra-{k}" for k in _extra_specs()]
GENERATED_IDS = [f"generated-{lay}-{i}" for lay in LAYOUT_NAMES for i in range(N_GENERATED)]


def _all_specs() -> dict[str, Planned]:
    out = {f"example-{p.stem}": _plan(yaml.safe_load(p.read_text()), False) for p in example_paths()}
    out |= {f"extra-{k}": _plan(v, False) for k, v in _extra_specs().items()}
    for lay in LAYOUT_NAMES:
        for i, obj in enumerate(_generated_specs(lay, N_GENERATED)):
            out[f"generated-{lay}-{i}"] = _plan(obj, True)
    return out


def _case(spec_id: str, p: Planned, pod: PodPlan) -> dict[str, Any]:
    ctr = serving_container(p.pdep, pod)
    env = {e["name"]: e["value"] for e in ctr.get("env") or [] if e["name"] in VLLM_ENV and "value" in e}
    case_id = f"{spec_id}/{pod.name}"
    if p.group.layout == Layout.TORCHRUN:
        pc = p.pdep.spec.parallel_config
        parallel = {
            "tensor_parallel_size": pc.tensor_parallel_size,
            "pipeline_parallel_size": pc.pipeline_parallel_size,
            "data_parallel_size": pc.data_parallel_size,
            "enable_expert_parallel": pc.enable_expert_parallel,
        }
        return {"id": case_id, "kind": "external_launcher", "parallel": parallel, "env": env}
    assert ctr["command"] == ["vllm", "serve"], ctr["command"]
    argv = [a.replace("$(VLLM_HOST_IP)", HOST_IP) for a in args_of(p.pdep, pod)]
    return {"id": case_id, "kind": "serve", "argv": argv, "env": env}


# Cases that show the helper can fail (see test_the_helper_really_parses).
PROBES: list[dict[str, Any]] = [
    {"id": "probe/unknown-flag", "kind": "serve", "argv": ["m", "--data-parallel-rank-x", "1"], "env": {}},
    {"id": "probe/bad-choice", "kind": "serve", "argv": ["m", "--all2all-backend", "nope"], "env": {}},
    {
        "id": "probe/external-by-rank",
        "kind": "serve",
        "argv": ["m", "-dp", "2", "-dpn", "1", "-dpa", "h"],
        "env": {},
    },
    {
        "id": "probe/hybrid-flag-omitted",
        "kind": "serve",
        "argv": ["m", "-dp", "16", "-dpl", "8", "--data-parallel-start-rank", "0", "-dpa", "h"],
        "env": {},
    },
]


# ------------------------------------------------------------------------------ the vLLM venv


def _cache_dir() -> Path:
    if os.environ.get("WIDEEP_CACHE_DIR"):
        return Path(os.environ["WIDEEP_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "wideep"


def find_vllm_python() -> Path | None:
    """The python of a complete vLLM virtualenv (tools/vllm-venv.sh marks it COMPLETE), or None."""
    explicit = os.environ.get("WIDEEP_VLLM_VENV")
    if explicit:
        return Path(explicit) / "bin" / "python"
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    venvs = sorted(
        (_cache_dir() / "venvs").glob(f"vllm-{VLLM_VERSION}-py*"),
        key=lambda v: v.name != f"vllm-{VLLM_VERSION}-{tag}",
    )
    for venv in venvs:
        if (venv / "COMPLETE").is_file() and (venv / "bin" / "python").exists():
            return venv / "bin" / "python"
    return None


# Building the vLLM virtualenv (WIDEEP_REQUIRE_VLLM without one) downloads several GB: give it time.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
    pytest.mark.timeout(3600 if REQUIRE and find_vllm_python() is None else 900),
]


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    python = find_vllm_python()
    if python is not None:
        return python
    if not REQUIRE:
        pytest.skip(
            f"the vLLM {VLLM_VERSION} virtualenv is not built (no COMPLETE venv under {_cache_dir() / 'venvs'}):"
            " run `bash tools/vllm-venv.sh` (several GB, once per machine), or set WIDEEP_REQUIRE_VLLM=1 to"
            " build it here and make this test mandatory"
        )
    build = subprocess.run(
        ["bash", str(ROOT / "tools" / "vllm-venv.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "VLLM_VERSION": VLLM_VERSION},
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"WIDEEP_REQUIRE_VLLM is set and tools/vllm-venv.sh failed:\n{build.stderr[-4000:]}")
    return Path(build.stdout.strip().splitlines()[-1]) / "bin" / "python"


@dataclass(frozen=True)
class Parsed:
    specs: dict[str, Planned]
    results: dict[str, dict[str, Any]]
    vllm_version: str


@pytest.fixture(scope="module")
def parsed(vllm_python: Path) -> Parsed:
    specs = _all_specs()
    cases = [_case(sid, p, pod) for sid, p in specs.items() for pod in p.pods] + PROBES
    env = {k: v for k, v in os.environ.items() if k not in VLLM_ENV and not k.startswith("VLLM_")}
    env |= {"CUDA_VISIBLE_DEVICES": "", "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [str(vllm_python), str(HELPER)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"vllm_parse_args.py failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    out = json.loads(proc.stdout)
    assert set(out["results"]) == {c["id"] for c in cases}
    return Parsed(specs, out["results"], out["vllm_version"])


def test_it_is_the_real_vllm(parsed: Parsed) -> None:
    assert parsed.vllm_version == VLLM_VERSION
    assert len(parsed.results) >= 60, len(parsed.results)


# --------------------------------------------------------------------------------- expectations


def expected_dp(p: Planned, pod: PodPlan) -> dict[str, Any]:
    """The DP fields vLLM must resolve for ``pod``, from the plan (not from its args)."""
    pc = p.pdep.spec.parallel_config
    lay = p.group.layout
    out: dict[str, Any] = {
        "data_parallel_size": pc.data_parallel_size,
        "data_parallel_rank": pod.dp_ranks[0],
        "data_parallel_size_local": len(pod.dp_ranks),
        "data_parallel_external_lb": lay == Layout.EXTERNAL_LB,
        "data_parallel_hybrid_lb": lay == Layout.HYBRID_LB,
    }
    if pc.data_parallel_size > 1:  # (DP=1 uses neither: no flags are rendered for them)
        # Rank 0 binds its own pod IP; the others dial rank 0's stable DNS name.
        out["data_parallel_master_ip"] = HOST_IP if pod.index == 0 else p.group.master_address
        out["data_parallel_rpc_port"] = pc.data_parallel_rpc_port
    return out


def expected_engine(p: Planned) -> dict[str, Any]:
    pc = p.pdep.spec.parallel_config
    out: dict[str, Any] = {
        "tensor_parallel_size": pc.tensor_parallel_size,
        "pipeline_parallel_size": pc.pipeline_parallel_size,
        "decode_context_parallel_size": pc.decode_context_parallel_size,
        "enable_expert_parallel": pc.enable_expert_parallel,
        "all2all_backend": pc.all2all_backend if p.pdep.spec.vllm_version != "0.11.0" else None,
        "enable_eplb": pc.enable_eplb,
        "eplb_config": derived.effective_eplb(pc).model_dump() if pc.enable_eplb else VLLM_EPLB_DEFAULT,
        "expert_placement_strategy": pc.expert_placement_strategy,
        "enable_dbo": pc.enable_dbo,
        "distributed_executor_backend": pc.distributed_executor_backend,
        "data_parallel_backend": pc.data_parallel_backend,
        "disable_custom_all_reduce": pc.disable_custom_all_reduce,
    }
    if pc.enable_dbo:
        out["dbo_decode_token_threshold"] = pc.dbo_decode_token_threshold
        out["dbo_prefill_token_threshold"] = pc.dbo_prefill_token_threshold
    return out


def reproduce_dp_resolution(ea: dict[str, Any], headless: bool) -> dict[str, Any]:
    """docs/vllm-wiring.md §1-§2 (v0.11.1 create_engine_config), from the parsed EngineArgs (nnodes == 1)."""
    assert ea["nnodes"] == 1
    assert not (headless and ea["data_parallel_hybrid_lb"])
    assert not (ea["data_parallel_hybrid_lb"] and ea["data_parallel_external_lb"])
    rank = ea["data_parallel_rank"]
    hybrid = ea["data_parallel_hybrid_lb"]
    external = ea["data_parallel_external_lb"] or rank is not None
    if external:
        assert rank is not None
        assert ea["data_parallel_size_local"] in (1, None)
        local, hybrid = 1, False
    elif ea["data_parallel_size_local"] is not None:
        local = ea["data_parallel_size_local"]
        if ea["data_parallel_start_rank"] and not headless:
            hybrid = True
        if hybrid and local == 1:
            external, hybrid = True, False
        if local == ea["data_parallel_size"]:
            hybrid = False
        rank = ea["data_parallel_start_rank"] or 0
    else:
        assert not hybrid
        local = ea["data_parallel_size"]  # mp backend (ray + span packing would give 1)
    out = {
        "data_parallel_size": ea["data_parallel_size"],
        "data_parallel_rank": rank or 0,
        "data_parallel_size_local": local,
        "data_parallel_rpc_port": ea["data_parallel_rpc_port"] or 29550,
        "data_parallel_external_lb": external,
        "data_parallel_hybrid_lb": hybrid,
    }
    if ea["data_parallel_address"] or ea["data_parallel_backend"] == "mp":  # ray: get_ip()
        out["data_parallel_master_ip"] = ea["data_parallel_address"] or "127.0.0.1"
    return out


def _diff(where: str, got: dict[str, Any], want: dict[str, Any]) -> Iterator[str]:
    for k, v in want.items():
        if got.get(k) != v:
            yield f"{where}.{k}: vLLM has {got.get(k)!r}, planned {v!r}"


def mismatches(spec_id: str, p: Planned, results: dict[str, dict[str, Any]]) -> list[str]:
    pc = p.pdep.spec.parallel_config
    lay = p.group.layout
    cfg_hash = derived.vllm_config_hash(pc)
    out: list[str] = []
    for pod in p.pods:
        r = results[f"{spec_id}/{pod.name}"]
        where = pod.name
        if r["error"] or r.get("config_error"):
            out.append(f"{where}: {r['error'] or r['config_error']}")
            continue
        config = r["config"]
        if lay == Layout.TORCHRUN:
            out += _diff(
                f"{where}.config",
                config,
                {
                    "data_parallel_rank": pod.dp_ranks[0],
                    "world_size": pc.data_parallel_size * pc.pipeline_parallel_size * pc.tensor_parallel_size,
                },
            )
            continue
        ns, ea, resolved = r["namespace"], r["engine_args"], r["resolved"]
        user_args = serving_container(p.pdep, pod)["args"]
        want_ns: dict[str, Any] = {"model_tag": user_args[0], "headless": not pod.serves_http}
        if pod.serves_http:
            want_ns |= {
                "port": p.pdep.spec.serving.port,
                "api_server_count": p.pdep.spec.serving.api_server_count or 1,
            }
        else:
            want_ns["api_server_count"] = 1
        out += _diff(f"{where}.args", ns, want_ns)
        out += _diff(f"{where}.engine_args", ea, expected_engine(p))
        out += _diff(f"{where}.resolved", resolved, expected_dp(p, pod) | expected_engine(p))
        out += _diff(f"{where}.reproduced", reproduce_dp_resolution(ea, ns["headless"]), expected_dp(p, pod))
        out += _diff(f"{where}.reproduced-vs-vllm", resolved, reproduce_dp_resolution(ea, ns["headless"]))
        want_config = expected_dp(p, pod) | {
            "world_size": pc.pipeline_parallel_size * pc.tensor_parallel_size,
            "all2all_backend": derived.effective_all2all(pc),  # 0.11.0 profile: through VLLM_ALL2ALL_BACKEND
            "compute_hash": cfg_hash,  # what rank 0 checks every rank against at startup
        }
        if pc.data_parallel_size == 1:  # DP=1: vLLM takes the DP fields from VLLM_DP_* env (unset)
            want_config = {k: v for k, v in want_config.items() if not k.startswith("data_parallel_")}
        out += _diff(f"{where}.config", config, want_config)
        out += [f"{where}: vllm serve would refuse to launch: {e}" for e in r["launch_errors"]]
    return out


@pytest.mark.parametrize("spec_id", EXAMPLE_IDS + EXTRA_IDS + GENERATED_IDS)
def test_vllm_parses_planned_args(spec_id: str, parsed: Parsed) -> None:
    if spec_id not in parsed.specs:
        pytest.fail(f"{spec_id} was not generated (the strategy drew fewer than {N_GENERATED} specs)")
    p = parsed.specs[spec_id]
    problems = mismatches(spec_id, p, parsed.results)
    assert not problems, f"{spec_id} ({p.group.layout}, {len(p.group.pods)} pods):\n" + "\n".join(problems)


def test_config_hash_agrees_with_vllm_across_all_pods(parsed: Parsed) -> None:
    """Every serving pod of a group yields the same vLLM compute_hash(), the planner's config-hash."""
    for spec_id, p in parsed.specs.items():
        if p.group.layout == Layout.TORCHRUN:
            continue
        hashes = {
            parsed.results[f"{spec_id}/{pod.name}"].get("config", {}).get("compute_hash") for pod in p.pods
        }
        assert hashes == {p.group.config_hash}, spec_id


def test_the_helper_really_parses(parsed: Parsed) -> None:
    """An unknown flag and a wrong choice are errors, not silently dropped; short aliases resolve."""
    r = parsed.results
    assert "unrecognized arguments: --data-parallel-rank-x" in r["probe/unknown-flag"]["error"]
    assert "invalid choice" in r["probe/bad-choice"]["error"]
    assert r["probe/external-by-rank"]["error"] is None
    assert r["probe/external-by-rank"]["resolved"]["data_parallel_rank"] == 1
    assert r["probe/external-by-rank"]["resolved"]["data_parallel_external_lb"] is True
    # Without --data-parallel-hybrid-lb, start rank 0 (falsy) does not infer hybrid LB on the first pod.
    assert r["probe/hybrid-flag-omitted"]["resolved"]["data_parallel_hybrid_lb"] is False
