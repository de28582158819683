"""Cross-field rules, each written once as a Python predicate and once as CEL.

Every rule carries both forms side by side, so the API server (CEL in the CRD), ``wideep
validate`` and the controller give the same verdict; ``tests/api`` checks both against the
same table, and a property test checks them against each other on a real API server.

Sources: vLLM v0.11.1 ``vllm/config/parallel.py`` (``_validate_parallel_config``,
``__post_init__``, ``_verify_args``) and ``vllm/engine/arg_utils.py``
(``create_engine_config`` L1456-L1585), as summarised in docs/vllm-wiring.md §7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .models import DEEPEP_BACKENDS, ParallelConfig, ParallelDeploymentSpec

Scope = Literal["root", "spec", "parallelConfig", "container"]

# Flags the operator renders itself. A user arg equal to one of these, or starting with
# "<flag>=", or (for the prefixes) starting with the prefix, is refused.
RESERVED_FLAG_PREFIXES: tuple[str, ...] = (
    "--data-parallel",  # every --data-parallel-* flag, and the --no- forms below
    "--no-data-parallel",
    "--tensor-parallel-size",
    "--pipeline-parallel-size",
    "--decode-context-parallel-size",
    "--enable-expert-parallel",
    "--no-enable-expert-parallel",
    "--all2all-backend",
    "--enable-eplb",
    "--no-enable-eplb",
    "--eplb-",
    "--num-redundant-experts",
    "--expert-placement-strategy",
    "--enable-dbo",
    "--no-enable-dbo",
    "--dbo-",
    "--distributed-executor-backend",
    "--disable-custom-all-reduce",
    "--no-disable-custom-all-reduce",
    "--headless",
    "--api-server-count",
    "--nnodes",
    "--node-rank",
    "--master-addr",
    "--master-port",
    "--port",
)
# Short aliases: refused when equal to the flag or starting with "<flag>=".
RESERVED_SHORT_FLAGS: tuple[str, ...] = (
    "-dp",
    "-dpl",
    "-dpn",
    "-dpr",
    "-dpa",
    "-dpp",
    "-dpb",
    "-dph",
    "-dpe",
    "-tp",
    "-pp",
    "-dcp",
    "-ep",
    "-asc",
    "-n",
    "-r",
)

RESERVED_ENV: tuple[str, ...] = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "VLLM_PORT",
    "VLLM_HOST_IP",
    "VLLM_ALL2ALL_BACKEND",
    "VLLM_DP_RANK",
    "VLLM_DP_RANK_LOCAL",
    "VLLM_DP_SIZE",
    "VLLM_DP_MASTER_IP",
    "VLLM_DP_MASTER_PORT",
    "GLOO_SOCKET_IFNAME",
    "NCCL_SOCKET_IFNAME",
)
RESERVED_ENV_PREFIX = "WIDEEP_"

MAX_NAME_LENGTH = 48
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_PODS = 4096


def vllm_flag_spelling(arg: str) -> str:
    """``arg`` as vLLM's FlexibleArgumentParser reads it: in a ``--`` flag's name (up to the first
    ``=`` or ``.``), underscores are dashes, so ``--data_parallel_size=2`` is ``--data-parallel-size=2``."""
    if not arg.startswith("--"):
        return arg
    key, eq, value = arg.partition("=")
    name, dot, rest = key[2:].partition(".")
    return "--" + name.replace("_", "-") + dot + rest + eq + value


def is_reserved_arg(arg: str) -> bool:
    arg = vllm_flag_spelling(arg)
    if any(arg.startswith(p) for p in RESERVED_FLAG_PREFIXES):
        return True
    return any(arg == f or arg.startswith(f + "=") for f in RESERVED_SHORT_FLAGS)


def is_reserved_env(name: str) -> bool:
    return name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIX)


def _cel_str_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


def _spellings(prefix: str) -> list[str]:
    """Every spelling of a ``--`` flag prefix with each dash of its name written as '-' or '_'.

    CEL gets these as plain startsWith checks: a string transformation (replace, matches) per arg
    costs O(len) and exceeds the CRD's CEL cost budget at 256 args of 8192 characters."""
    parts = prefix[2:].split("-")
    out = [parts[0]]
    for part in parts[1:]:
        out = [o + sep + part for o in out for sep in "-_"]
    return ["--" + o for o in out]


def _cel_reserved_arg(var: str) -> str:
    prefixes = " || ".join(f"{var}.startsWith('{s}')" for p in RESERVED_FLAG_PREFIXES for s in _spellings(p))
    shorts = " || ".join(f"{var} == '{f}' || {var}.startsWith('{f}=')" for f in RESERVED_SHORT_FLAGS)
    return f"{prefixes} || {shorts}"


@dataclass(frozen=True)
class Rule:
    """One validation rule in both languages.

    ``field`` is the path, relative to the scope, that the message names; ``cel`` is evaluated
    with ``self`` bound to the scope object, after the API server applied the schema defaults.
    """

    id: str
    scope: Scope
    field: str
    message: str
    cel: str
    check: Callable[[Any], bool]


def _pc(id: str, field: str, message: str, cel: str, check: Callable[[ParallelConfig], bool]) -> Rule:
    return Rule(id, "parallelConfig", field, message, cel, check)


def _local(pc: ParallelConfig) -> int | None:
    return pc.data_parallel_size_local


def _eff_redundant(pc: ParallelConfig) -> int:
    if pc.num_redundant_experts is not None:
        return pc.num_redundant_experts
    return pc.eplb_config.num_redundant_experts


def _uses_layout_with_pods_per_rank(pc: ParallelConfig) -> bool:
    return pc.data_parallel_external_lb or pc.data_parallel_hybrid_lb


PARALLEL_CONFIG_RULES: tuple[Rule, ...] = (
    _pc(
        "dp-local-le-dp",
        "dataParallelSizeLocal",
        "must be <= dataParallelSize (vLLM: data_parallel_size_local must be <= data_parallel_size)",
        "!has(self.dataParallelSizeLocal) || self.dataParallelSizeLocal <= self.dataParallelSize",
        lambda pc: _local(pc) is None or (_local(pc) or 0) <= pc.data_parallel_size,
    ),
    _pc(
        "external-lb-needs-dp",
        "dataParallelExternalLb",
        "external LB needs dataParallelSize > 1",
        "!self.dataParallelExternalLb || self.dataParallelSize > 1",
        lambda pc: not pc.data_parallel_external_lb or pc.data_parallel_size > 1,
    ),
    _pc(
        "external-lb-local-one",
        "dataParallelSizeLocal",
        "must be 1 or unset with dataParallelExternalLb (one DP rank per pod)",
        "!self.dataParallelExternalLb || !has(self.dataParallelSizeLocal) || self.dataParallelSizeLocal == 1",
        lambda pc: not pc.data_parallel_external_lb or _local(pc) in (None, 1),
    ),
    _pc(
        "external-hybrid-exclusive",
        "dataParallelHybridLb",
        "dataParallelExternalLb and dataParallelHybridLb are mutually exclusive",
        "!(self.dataParallelExternalLb && self.dataParallelHybridLb)",
        lambda pc: not (pc.data_parallel_external_lb and pc.data_parallel_hybrid_lb),
    ),
    _pc(
        "hybrid-lb-needs-local",
        "dataParallelSizeLocal",
        "hybrid LB needs dataParallelSizeLocal > 0 (DP ranks per pod)",
        "!self.dataParallelHybridLb || (has(self.dataParallelSizeLocal) && self.dataParallelSizeLocal > 0)",
        lambda pc: not pc.data_parallel_hybrid_lb or (_local(pc) or 0) > 0,
    ),
    _pc(
        "hybrid-lb-local-divides-dp",
        "dataParallelSizeLocal",
        "dataParallelSize must be divisible by dataParallelSizeLocal in hybrid LB (equal pods)",
        "!self.dataParallelHybridLb || !has(self.dataParallelSizeLocal) || self.dataParallelSizeLocal == 0"
        " || self.dataParallelSize % self.dataParallelSizeLocal == 0",
        lambda pc: (
            not pc.data_parallel_hybrid_lb or not _local(pc) or pc.data_parallel_size % (_local(pc) or 1) == 0
        ),
    ),
    _pc(
        "hybrid-lb-local-not-one",
        "dataParallelSizeLocal",
        "hybrid LB with 1 rank per pod is external LB (vLLM would switch silently): set dataParallelExternalLb",
        "!self.dataParallelHybridLb || !has(self.dataParallelSizeLocal) || self.dataParallelSizeLocal != 1",
        lambda pc: not pc.data_parallel_hybrid_lb or _local(pc) != 1,
    ),
    _pc(
        "hybrid-lb-local-lt-dp",
        "dataParallelSizeLocal",
        "hybrid LB needs dataParallelSizeLocal < dataParallelSize (vLLM turns hybrid off when they are equal)",
        "!self.dataParallelHybridLb || !has(self.dataParallelSizeLocal)"
        " || self.dataParallelSizeLocal < self.dataParallelSize",
        lambda pc: (
            not pc.data_parallel_hybrid_lb or _local(pc) is None or (_local(pc) or 0) < pc.data_parallel_size
        ),
    ),
    _pc(
        "internal-lb-local",
        "dataParallelSizeLocal",
        "internal LB needs dataParallelSizeLocal >= 1 dividing dataParallelSize (an API-only head, 0, is"
        " not supported)",
        "self.dataParallelExternalLb || self.dataParallelHybridLb || self.dataParallelSize == 1"
        " || (has(self.distributedExecutorBackend) && self.distributedExecutorBackend == 'external_launcher')"
        " || !has(self.dataParallelSizeLocal)"
        " || (self.dataParallelSizeLocal > 0 && self.dataParallelSize % self.dataParallelSizeLocal == 0)",
        lambda pc: (
            pc.data_parallel_external_lb
            or pc.data_parallel_hybrid_lb
            or pc.data_parallel_size == 1
            or pc.distributed_executor_backend == "external_launcher"
            or _local(pc) is None
            or ((_local(pc) or 0) > 0 and pc.data_parallel_size % (_local(pc) or 1) == 0)
        ),
    ),
    _pc(
        "eplb-needs-ep",
        "enableEplb",
        "EPLB needs enableExpertParallel (vLLM: enable_expert_parallel must be True to use EPLB)",
        "!self.enableEplb || self.enableExpertParallel",
        lambda pc: not pc.enable_eplb or pc.enable_expert_parallel,
    ),
    _pc(
        "eplb-needs-tp-dp",
        "enableEplb",
        "EPLB needs tensorParallelSize * dataParallelSize > 1",
        "!self.enableEplb || self.tensorParallelSize * self.dataParallelSize > 1",
        lambda pc: not pc.enable_eplb or pc.tensor_parallel_size * pc.data_parallel_size > 1,
    ),
    _pc(
        "redundant-experts-need-eplb",
        "eplbConfig.numRedundantExperts",
        "redundant experts need enableEplb (vLLM: either enable EPLB or unset num_redundant_experts)",
        "self.enableEplb || (has(self.numRedundantExperts) ? self.numRedundantExperts == 0"
        " : self.eplbConfig.numRedundantExperts == 0)",
        lambda pc: pc.enable_eplb or _eff_redundant(pc) == 0,
    ),
    _pc(
        "dbo-needs-deepep",
        "enableDbo",
        "DBO needs all2allBackend deepep_low_latency or deepep_high_throughput",
        "!self.enableDbo || (has(self.all2allBackend) && self.all2allBackend in "
        + _cel_str_list(DEEPEP_BACKENDS)
        + ")",
        lambda pc: not pc.enable_dbo or pc.all2all_backend in DEEPEP_BACKENDS,
    ),
    _pc(
        "tp-divisible-by-dcp",
        "decodeContextParallelSize",
        "tensorParallelSize must be divisible by decodeContextParallelSize",
        "self.tensorParallelSize % self.decodeContextParallelSize == 0",
        lambda pc: pc.tensor_parallel_size % pc.decode_context_parallel_size == 0,
    ),
    _pc(
        "ports-distinct",
        "dataParallelMasterPort",
        "must differ from dataParallelRpcPort",
        "self.dataParallelMasterPort != self.dataParallelRpcPort",
        lambda pc: pc.data_parallel_master_port != pc.data_parallel_rpc_port,
    ),
    _pc(
        "ray-dp-backend",
        "dataParallelBackend",
        "ray launches DP engines inside a Ray cluster spanning pods, which the operator does not run:"
        " use mp when dataParallelSize > 1",
        "self.dataParallelBackend != 'ray' || self.dataParallelSize == 1",
        lambda pc: pc.data_parallel_backend != "ray" or pc.data_parallel_size == 1,
    ),
    _pc(
        "ray-dp-needs-ray-executor",
        "distributedExecutorBackend",
        "dataParallelBackend: ray needs distributedExecutorBackend ray or unset",
        "self.dataParallelBackend != 'ray' || !has(self.distributedExecutorBackend)"
        " || self.distributedExecutorBackend == 'ray'",
        lambda pc: pc.data_parallel_backend != "ray" or pc.distributed_executor_backend in (None, "ray"),
    ),
    _pc(
        "uni-needs-world-one",
        "distributedExecutorBackend",
        "uni runs one worker: it needs pipelineParallelSize * tensorParallelSize == 1",
        "!has(self.distributedExecutorBackend) || self.distributedExecutorBackend != 'uni'"
        " || self.pipelineParallelSize * self.tensorParallelSize == 1",
        lambda pc: (
            pc.distributed_executor_backend != "uni"
            or pc.pipeline_parallel_size * pc.tensor_parallel_size == 1
        ),
    ),
    _pc(
        "external-launcher-offline",
        "distributedExecutorBackend",
        "external_launcher is the offline torchrun-style layout: it cannot be combined with external or"
        " hybrid LB",
        "!has(self.distributedExecutorBackend) || self.distributedExecutorBackend != 'external_launcher'"
        " || (!self.dataParallelExternalLb && !self.dataParallelHybridLb)",
        lambda pc: (
            pc.distributed_executor_backend != "external_launcher" or not _uses_layout_with_pods_per_rank(pc)
        ),
    ),
    _pc(
        "max-pods",
        "dataParallelSize",
        f"the group may have at most {MAX_PODS} GPUs under external_launcher (one pod per GPU)",
        "!has(self.distributedExecutorBackend) || self.distributedExecutorBackend != 'external_launcher'"
        f" || self.pipelineParallelSize * self.tensorParallelSize * self.dataParallelSize <= {MAX_PODS}",
        lambda pc: (
            pc.distributed_executor_backend != "external_launcher"
            or pc.pipeline_parallel_size * pc.tensor_parallel_size * pc.data_parallel_size <= MAX_PODS
        ),
    ),
)


def _spec_container_named(spec: ParallelDeploymentSpec) -> bool:
    name = spec.serving.container_name
    return name is None or any(c.name == name for c in spec.template.spec.containers)


SPEC_RULES: tuple[Rule, ...] = (
    Rule(
        "http-port-distinct",
        "spec",
        "serving.port",
        "must differ from parallelConfig.dataParallelRpcPort and dataParallelMasterPort",
        "self.serving.port != self.parallelConfig.dataParallelRpcPort"
        " && self.serving.port != self.parallelConfig.dataParallelMasterPort",
        lambda s: (
            s.serving.port
            not in (s.parallel_config.data_parallel_rpc_port, s.parallel_config.data_parallel_master_port)
        ),
    ),
    Rule(
        "serving-container-exists",
        "spec",
        "serving.containerName",
        "must name a container of template.spec.containers",
        "!has(self.serving.containerName)"
        " || self.template.spec.containers.exists(c, c.name == self.serving.containerName)",
        _spec_container_named,
    ),
)

CONTAINER_RULES: tuple[Rule, ...] = (
    Rule(
        "reserved-args",
        "container",
        "args",
        "may not set flags the operator renders from spec.parallelConfig/serving (--data-parallel-*,"
        " --tensor-parallel-size/-tp, --pipeline-parallel-size/-pp, --enable-expert-parallel, --all2all-backend,"
        " --enable-eplb/--eplb-config, --enable-dbo, -dcp, --distributed-executor-backend, --headless,"
        " --api-server-count, --port, ...)",
        "!has(self.args) || !self.args.exists(a, " + _cel_reserved_arg("a") + ")",
        lambda c: not any(is_reserved_arg(a) for a in (c.args or [])),
    ),
    Rule(
        "reserved-env",
        "container",
        "env",
        "may not set variables the operator owns (" + ", ".join(RESERVED_ENV) + ", WIDEEP_*)",
        "!has(self.env) || !self.env.exists(e, e.name in "
        + _cel_str_list(RESERVED_ENV)
        + f" || e.name.startsWith('{RESERVED_ENV_PREFIX}'))",
        lambda c: not any(is_reserved_env(e.name) for e in (c.env or [])),
    ),
)

ROOT_RULES: tuple[Rule, ...] = (
    Rule(
        "name",
        "root",
        "metadata.name",
        f"must be at most {MAX_NAME_LENGTH} characters, start with a letter and contain only lower-case"
        " letters, digits and '-' (it names pods and Services)",
        f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{NAME_PATTERN}')",
        lambda name: isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and _name_ok(name),
    ),
)


def _name_ok(name: str) -> bool:
    import re

    return re.fullmatch(NAME_PATTERN, name) is not None


ALL_RULES: tuple[Rule, ...] = PARALLEL_CONFIG_RULES + SPEC_RULES + CONTAINER_RULES + ROOT_RULES
