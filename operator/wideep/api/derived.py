"""Values derived from a validated spec, computed the way vLLM computes them. Pure."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .models import DEFAULT_ALL2ALL_BACKEND, EplbConfig, ParallelConfig, ParallelDeploymentSpec


class Layout(StrEnum):
    EXTERNAL_LB = "ExternalLB"
    """One pod per DP rank, each serving HTTP (--data-parallel-rank)."""
    HYBRID_LB = "HybridLB"
    """dataParallelSizeLocal ranks per pod, each pod serving HTTP (--data-parallel-hybrid-lb)."""
    INTERNAL_LB = "InternalLB"
    """A head pod serving HTTP plus --headless pods."""
    SINGLE = "Single"
    """DP=1: one pod."""
    TORCHRUN = "TorchRun"
    """external_launcher: one pod per GPU with torchrun env (offline)."""


def effective_eplb(pc: ParallelConfig) -> EplbConfig:
    """eplbConfig with the deprecated top-level fields forwarded into it, as vLLM's __post_init__ does."""
    e = pc.eplb_config.model_copy()
    if pc.num_redundant_experts is not None:
        e.num_redundant_experts = pc.num_redundant_experts
    if pc.eplb_window_size is not None:
        e.window_size = pc.eplb_window_size
    if pc.eplb_step_interval is not None:
        e.step_interval = pc.eplb_step_interval
    if pc.eplb_log_balancedness is not None:
        e.log_balancedness = pc.eplb_log_balancedness
    return e


DEPRECATED_FIELDS = {
    "num_redundant_experts": ("numRedundantExperts", "eplbConfig.numRedundantExperts"),
    "eplb_window_size": ("eplbWindowSize", "eplbConfig.windowSize"),
    "eplb_step_interval": ("eplbStepInterval", "eplbConfig.stepInterval"),
    "eplb_log_balancedness": ("eplbLogBalancedness", "eplbConfig.logBalancedness"),
}


def deprecation_warnings(pc: ParallelConfig) -> list[str]:
    out = []
    for attr, (old, new) in DEPRECATED_FIELDS.items():
        value = getattr(pc, attr)
        if value is not None:
            out.append(
                f"spec.parallelConfig.{old} is deprecated (vLLM removes it in v0.12.0): "
                f"forwarded to spec.parallelConfig.{new}={json.dumps(value)}; set that field instead"
            )
    if pc.expert_placement_strategy == "round_robin" and (
        pc.enable_eplb or effective_eplb(pc).num_redundant_experts > 0
    ):
        out.append(
            "spec.parallelConfig.expertPlacementStrategy: round_robin has no effect with EPLB or redundant "
            "experts; vLLM falls back to linear"
        )
    return out


def effective_all2all(pc: ParallelConfig) -> str:
    return pc.all2all_backend or DEFAULT_ALL2ALL_BACKEND


def vllm_config_hash(pc: ParallelConfig) -> str:
    """vLLM's ParallelConfig.compute_hash() (v0.11.1 parallel.py L440-L463), from the same factors.

    The all2all backend is the effective one: vLLM's __post_init__ fills it from
    VLLM_ALL2ALL_BACKEND's default before hashing.
    """
    factors: list[Any] = [
        pc.pipeline_parallel_size,
        pc.tensor_parallel_size,
        pc.enable_expert_parallel,
        pc.data_parallel_size,
        effective_all2all(pc),
        pc.enable_eplb,
    ]
    if pc.enable_eplb:
        e = effective_eplb(pc)
        factors += [e.log_balancedness, e.window_size, e.step_interval, e.num_redundant_experts]
    return hashlib.sha256(str(factors).encode()).hexdigest()


def layout(pc: ParallelConfig) -> Layout:
    if pc.distributed_executor_backend == "external_launcher":
        return Layout.TORCHRUN
    if pc.data_parallel_external_lb:
        return Layout.EXTERNAL_LB
    if pc.data_parallel_hybrid_lb:
        return Layout.HYBRID_LB
    if pc.data_parallel_size == 1:
        return Layout.SINGLE
    return Layout.INTERNAL_LB


def world_size(pc: ParallelConfig) -> int:
    """vLLM's ParallelConfig.world_size: PP x TP, times DP under external_launcher."""
    ws = pc.pipeline_parallel_size * pc.tensor_parallel_size
    if pc.distributed_executor_backend == "external_launcher":
        ws *= pc.data_parallel_size
    return ws


def world_size_across_dp(pc: ParallelConfig) -> int:
    """All GPUs of the group: PP x TP x DP."""
    return pc.pipeline_parallel_size * pc.tensor_parallel_size * pc.data_parallel_size


@dataclass(frozen=True)
class Shape:
    """How a group is laid out on pods, derived once from its ParallelConfig (docs/vllm-wiring.md §1, §2)."""

    layout: Layout
    pods: int
    ranks_per_pod: int
    """DP ranks hosted by one pod (torchrun-style: PP x TP pods host one rank; reported as 1)."""
    gpus_per_pod: int
    pp_tp: int
    """GPUs of one DP rank: pipeline x tensor parallel size."""

    def dp_ranks(self, index: int) -> tuple[int, ...]:
        """The DP ranks pod ``index`` hosts: the one rank index // (PP x TP) torchrun-style, else
        ranks_per_pod consecutive ranks from index x ranks_per_pod."""
        if self.layout == Layout.TORCHRUN:
            return (index // self.pp_tp,)
        return tuple(range(index * self.ranks_per_pod, (index + 1) * self.ranks_per_pod))

    @property
    def serves_http_everywhere(self) -> bool:
        """Whether every pod runs an API server (external and hybrid LB, DP=1); internal LB: the head only."""
        return self.layout in (Layout.EXTERNAL_LB, Layout.HYBRID_LB, Layout.SINGLE)


def shape(pc: ParallelConfig) -> Shape:
    lay = layout(pc)
    pp_tp = pc.pipeline_parallel_size * pc.tensor_parallel_size
    if lay == Layout.TORCHRUN:
        return Shape(lay, world_size_across_dp(pc), 1, 1, pp_tp)
    if lay in (Layout.EXTERNAL_LB, Layout.SINGLE):
        per_pod = 1
    else:
        per_pod = pc.data_parallel_size_local or pc.data_parallel_size
    return Shape(lay, pc.data_parallel_size // per_pod, per_pod, per_pod * pp_tp, pp_tp)


def sequence_parallel_moe(pc: ParallelConfig) -> bool:
    """vLLM's ParallelConfig.use_sequence_parallel_moe."""
    return (
        effective_all2all(pc)
        in ("allgather_reducescatter", "naive", "deepep_high_throughput", "deepep_low_latency")
        and pc.enable_expert_parallel
        and pc.tensor_parallel_size > 1
        and pc.data_parallel_size > 1
    )


def template_hash(spec: ParallelDeploymentSpec) -> str:
    """Hash of everything baked into a rank pod's spec: a change means the group is replaced.

    The restart policy and the template's labels and annotations are left out: they change in place.
    """
    material = spec.model_dump(
        mode="json", by_alias=True, exclude={"restart_policy": True, "template": {"metadata"}}
    )
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
