"""The ParallelDeployment API: the one schema.

The CRD's OpenAPI schema, its CEL rules (``rules.py``), ``kubectl explain`` text,
``docs/api.md``, ``wideep validate`` and the controller all come from these models.
Field docstrings are the user-facing descriptions.

vLLM field names are camelCased (``tensor_parallel_size`` → ``tensorParallelSize``);
defaults and bounds are vLLM's (vllm/config/parallel.py, v0.11.1).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

All2AllBackend = Literal[
    "naive",
    "pplx",
    "deepep_high_throughput",
    "deepep_low_latency",
    "allgather_reducescatter",
    "flashinfer_all2allv",
]
ALL2ALL_BACKENDS: tuple[str, ...] = All2AllBackend.__args__  # type: ignore[attr-defined]
DEEPEP_BACKENDS = ("deepep_low_latency", "deepep_high_throughput")
# vLLM 0.11.1's default when neither the flag nor VLLM_ALL2ALL_BACKEND is set (envs.py L1225-L1236).
DEFAULT_ALL2ALL_BACKEND = "allgather_reducescatter"

DistributedExecutorBackend = Literal["ray", "mp", "uni", "external_launcher"]
DataParallelBackend = Literal["mp", "ray"]
ExpertPlacementStrategy = Literal["linear", "round_robin"]
VllmVersionProfile = Literal["0.11.0", "0.11.1"]

MAX_DATA_PARALLEL = 4096
Arg = Annotated[str, StringConstraints(max_length=8192)]
MAX_PARALLEL = 1024


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )


class _OpenModel(BaseModel):
    """A typed view of part of a Kubernetes object; unknown fields are kept (x-kubernetes-preserve-unknown-fields)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        use_attribute_docstrings=True,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class EplbConfig(_Model):
    """Expert-parallel load balancing (vLLM ``--eplb-config``)."""

    window_size: int = Field(default=1000, ge=1, le=10_000_000)
    """Window size, in engine steps, over which expert load is recorded."""
    step_interval: int = Field(default=3000, ge=1, le=10_000_000)
    """Interval, in engine steps, between expert rearrangements."""
    num_redundant_experts: int = Field(default=0, ge=0, le=4096)
    """Redundant (replicated) experts added for load balancing. Needs enableEplb. Large DeepSeek-style
    deployments commonly use 32."""
    log_balancedness: bool = False
    """Log expert balancedness every step (adds communication overhead)."""


class ParallelConfig(_Model):
    """vLLM's ParallelConfig: how one model is split over GPUs, ranks and pods.

    The operator derives the pod layout from these fields the way vLLM itself does: external LB
    (one pod per DP rank), hybrid LB (dataParallelSizeLocal ranks per pod), internal LB (a head pod
    plus headless pods) or torchrun-style (distributedExecutorBackend: external_launcher).
    """

    pipeline_parallel_size: int = Field(default=1, ge=1, le=MAX_PARALLEL)
    """Pipeline-parallel stages per DP rank (vLLM --pipeline-parallel-size)."""
    tensor_parallel_size: int = Field(default=1, ge=1, le=MAX_PARALLEL)
    """Tensor-parallel GPUs per pipeline stage (vLLM --tensor-parallel-size)."""
    data_parallel_size: int = Field(default=1, ge=1, le=MAX_DATA_PARALLEL)
    """Data-parallel ranks in the group (vLLM --data-parallel-size). MoE layers are sharded over
    TP x DP. The scale subresource (kubectl scale) sets this field; any change replaces the group."""
    data_parallel_size_local: int | None = Field(default=None, ge=0, le=MAX_DATA_PARALLEL)
    """DP ranks hosted by one pod (vLLM --data-parallel-size-local). Required for hybrid LB; must be
    1 or unset for external LB; unset means vLLM's default (all ranks in one pod for internal LB)."""
    data_parallel_backend: DataParallelBackend = "mp"
    """Backend that launches DP engines (vLLM --data-parallel-backend). Pod-per-rank layouts need mp."""
    data_parallel_rpc_port: int = Field(default=29550, ge=1, le=65535)
    """Port of rank 0's start-up handshake (vLLM --data-parallel-rpc-port), published by a Service."""
    data_parallel_master_port: int = Field(default=29500, ge=1, le=65535)
    """Torch master port. vLLM ignores it online when DP>1 (it picks free ports); the torchrun-style
    layout uses it as MASTER_PORT and the preflight uses it for its rendezvous."""
    data_parallel_external_lb: bool = False
    """External load-balancer mode: one pod per DP rank, each serving HTTP; a load balancer routes to
    ranks (vLLM --data-parallel-external-lb / --data-parallel-rank). Needs dataParallelSize > 1."""
    data_parallel_hybrid_lb: bool = False
    """Hybrid load-balancer mode: each pod hosts dataParallelSizeLocal ranks behind its own API
    server (vLLM --data-parallel-hybrid-lb)."""
    enable_expert_parallel: bool = False
    """Use expert parallelism for MoE layers (EP group size = TP x DP)."""
    enable_eplb: bool = False
    """Expert-parallel load balancing. Needs enableExpertParallel and TP x DP > 1."""
    eplb_config: EplbConfig = Field(default_factory=EplbConfig)
    """EPLB parameters (vLLM --eplb-config)."""
    expert_placement_strategy: ExpertPlacementStrategy = "linear"
    """How experts are placed on ranks. round_robin only takes effect without EPLB and redundant
    experts; otherwise vLLM falls back to linear."""
    all2all_backend: All2AllBackend | None = Field(default=None, alias="all2allBackend")
    """MoE all2all backend. Unset means vLLM's default (allgather_reducescatter). vLLM 0.11.0 takes
    it through VLLM_ALL2ALL_BACKEND; 0.11.1+ through --all2all-backend. The operator renders the right
    form for spec.vllmVersion."""
    enable_dbo: bool = False
    """Dual batch overlap. Needs a DeepEP all2all backend."""
    dbo_decode_token_threshold: int = Field(default=32, ge=0, le=1_000_000)
    """Token threshold for micro-batching decode-only batches under DBO."""
    dbo_prefill_token_threshold: int = Field(default=512, ge=0, le=1_000_000)
    """Token threshold for micro-batching batches with prefills under DBO."""
    decode_context_parallel_size: int = Field(default=1, ge=1, le=MAX_PARALLEL)
    """Decode context parallelism (vLLM -dcp). tensorParallelSize must be divisible by it."""
    distributed_executor_backend: DistributedExecutorBackend | None = None
    """Executor for the workers of one DP rank. Unset means vLLM's automatic choice.
    external_launcher selects the torchrun-style layout (offline, one pod per GPU)."""
    disable_custom_all_reduce: bool = False
    """Disable vLLM's custom all-reduce kernel and use NCCL."""
    num_redundant_experts: int | None = Field(default=None, ge=0, le=4096)
    """Deprecated: use eplbConfig.numRedundantExperts. Forwarded there, with a warning."""
    eplb_window_size: int | None = Field(default=None, ge=1, le=10_000_000)
    """Deprecated: use eplbConfig.windowSize. Forwarded there, with a warning."""
    eplb_step_interval: int | None = Field(default=None, ge=1, le=10_000_000)
    """Deprecated: use eplbConfig.stepInterval. Forwarded there, with a warning."""
    eplb_log_balancedness: bool | None = Field(default=None)
    """Deprecated: use eplbConfig.logBalancedness. Forwarded there, with a warning."""


class _StatusModel(BaseModel):
    """Status is written by the operator; fields from other operator versions are ignored, not fatal."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_attribute_docstrings=True
    )


class EnvVar(_OpenModel):
    """A container environment variable."""

    name: str = Field(min_length=1, max_length=256)
    """Variable name."""


class Container(_OpenModel):
    """A container of the rank pod (core/v1 Container)."""

    name: str = Field(min_length=1, max_length=63)
    """Container name."""
    image: str | None = Field(default=None, max_length=1024)
    """Container image (a vLLM image for the serving container)."""
    command: list[Arg] | None = Field(default=None, max_length=64)
    """Entrypoint. Defaults to the layout's launcher (vllm serve) for the serving container."""
    args: list[Arg] | None = Field(default=None, max_length=256)
    """Arguments: the model and your own vLLM serving flags. The operator appends the parallel flags
    after them; flags the operator owns (--data-parallel-*, -tp, ...) are refused here."""
    env: list[EnvVar] | None = Field(default=None, max_length=256)
    """Environment. Variables the operator owns (RANK, MASTER_ADDR, VLLM_PORT, ...) are refused."""


class PodSpec(_OpenModel):
    """The rank pod's spec (core/v1 PodSpec)."""

    containers: list[Container] = Field(min_length=1, max_length=16)
    """Containers. The serving container is the one named by spec.serving.containerName, else the first."""
    init_containers: list[Container] | None = Field(default=None, max_length=16)
    """Init containers."""


class ObjectMeta(_OpenModel):
    """Labels and annotations copied to every rank pod."""

    labels: dict[str, str] | None = None
    """Labels added to every rank pod."""
    annotations: dict[str, str] | None = None
    """Annotations added to every rank pod."""


class PodTemplate(_OpenModel):
    """Pod template for the rank pods (core/v1 PodTemplateSpec)."""

    metadata: ObjectMeta | None = None
    """Pod labels and annotations."""
    spec: PodSpec
    """Pod spec: image, model and serving args, resources, volumes, env, scheduling."""


class Serving(_Model):
    """How the ranks serve HTTP."""

    port: int = Field(default=8000, ge=1, le=65535)
    """vLLM's HTTP port (--port), used by probes and the Services."""
    container_name: str | None = Field(default=None, max_length=63)
    """Name of the vLLM container in the template; default: the first container."""
    api_server_count: int | None = Field(default=None, ge=1, le=256)
    """API server processes per serving pod (vLLM --api-server-count)."""


class Network(_Model):
    """Pod network settings for the group's collectives."""

    socket_interface: str | None = Field(default="eth0", max_length=15, pattern=r"^[A-Za-z0-9_.:-]+$")
    """Interface for Gloo and NCCL bootstrap (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME)."""
    cluster_domain: str = Field(
        default="cluster.local", max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    """Cluster DNS domain, used in the fully qualified name of rank 0 that the other ranks dial."""
    shm_size_limit: str | None = Field(
        default=None, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|[mkMGTPE]|[eE][0-9]+)?$"
    )
    """Size limit of the memory-backed /dev/shm (for example 16Gi). Unset: no limit."""


class Startup(_Model):
    """Start-up budget: vLLM wide-EP start-up takes 7 to 10 minutes at scale."""

    timeout_seconds: int = Field(default=1800, ge=60, le=86_400)
    """How long a rank may take to start before its startup probe fails (budget of the probe)."""
    readiness_path: Literal["/health", "/v1/models"] = "/health"
    """HTTP path of the readiness and startup probes."""


class RestartPolicy(_Model):
    """Gang restart: a DP+EP group is fail-stop, so one failed rank restarts the whole group."""

    policy: Literal["RecreateGroup", "Never"] = "RecreateGroup"
    """RecreateGroup: recreate every pod of the group when any rank is lost: its process stopped for any
    reason and with any exit code (a vLLM rank that lost a DP peer exits 0), a container restarted, or the
    pod was deleted or evicted. Never: report the loss and leave the pods as they are."""
    max_restarts: int = Field(default=5, ge=0, le=1000)
    """Group restarts allowed before the deployment stops with Ready=False, reason
    RestartBudgetExhausted. A spec change or a new value of the annotation wideep.dev/retry resets it."""
    backoff_seconds: int = Field(default=10, ge=0, le=3600)
    """Wait before the first group restart; doubles with every restart."""
    max_backoff_seconds: int = Field(default=300, ge=0, le=86_400)
    """Upper bound of the restart backoff."""


class Preflight(_Model):
    """Rendezvous check before vLLM starts (wideep preflight, runs as an init container)."""

    enabled: bool = False
    """Add the preflight init container to every rank pod."""
    image: str | None = Field(default=None, max_length=1024)
    """Image with wideep and torch installed; default: the serving container's image."""
    timeout_seconds: int = Field(default=600, ge=10, le=86_400)
    """How long the preflight waits for every rank before it fails and names the missing ones."""


class ParallelDeploymentSpec(_Model):
    """Desired state of a vLLM data/expert-parallel group."""

    vllm_version: VllmVersionProfile = "0.11.1"
    """vLLM version profile of the image: decides the form of some flags (0.11.0 has no
    --all2all-backend and no --data-parallel-external-lb)."""
    parallel_config: ParallelConfig = Field(default_factory=ParallelConfig)
    """vLLM's parallel configuration."""
    template: PodTemplate
    """Pod template for the rank pods."""
    serving: Serving = Field(default_factory=Serving)
    """HTTP serving."""
    network: Network = Field(default_factory=Network)
    """Collective-communication network settings."""
    startup: Startup = Field(default_factory=Startup)
    """Start-up budget."""
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)
    """Gang restart policy and budget."""
    preflight: Preflight = Field(default_factory=Preflight)
    """Optional rendezvous preflight."""


# ---------------------------------------------------------------------------------------------
# Status


class Condition(_StatusModel):
    """A kstatus-style condition."""

    type: str
    """Valid, Ready, Progressing or Degraded."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str
    """CamelCase reason."""
    message: str = ""
    """Human-readable detail."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """metadata.generation this condition was computed from."""


class Failure(_StatusModel):
    """Forensics of a rank's last failure, kept after its pod is deleted."""

    reason: str = ""
    """Termination reason (Error, OOMKilled, Evicted, Deleted, ...)."""
    exit_code: int | None = None
    """Exit code of the failed container."""
    message: str = ""
    """Termination message of the failed container (truncated)."""
    container: str | None = None
    """Container that failed."""
    time: str | None = None
    """When the failure was observed."""
    pod: str | None = None
    """Pod that failed."""
    group_generation: int | None = None
    """Group generation of the pod that failed."""


class RankStatus(_StatusModel):
    """One rank pod as last observed."""

    rank: int
    """First DP rank hosted by the pod."""
    ranks: str | None = None
    """All DP ranks hosted by the pod (hybrid layouts), like 8-15."""
    pod: str
    """Pod name."""
    node: str | None = None
    """Node the pod is bound to."""
    phase: str = "Missing"
    """Pod phase (Pending, Running, Succeeded, Failed) or Missing."""
    ready: bool = False
    """Whether the pod is Ready."""
    restarts: int = 0
    """Container restarts of the current pod."""
    last_failure: Failure | None = None
    """Last failure of this rank."""


class Derived(_StatusModel):
    """Values computed from the spec (never typed by the user)."""

    layout: str
    """ExternalLB, HybridLB, InternalLB, Single or TorchRun."""
    world_size: int
    """GPUs of one DP rank: PP x TP (x DP under external_launcher), as vLLM computes it."""
    world_size_across_dp: int
    """All GPUs of the group: PP x TP x DP."""
    sequence_parallel_moe: bool
    """Whether vLLM runs MoE input sequence-parallel (use_sequence_parallel_moe)."""
    pods: int
    """Rank pods in the group."""
    gpus_per_pod: int
    """GPUs requested by each rank pod."""
    all2all_backend: str = Field(alias="all2allBackend")
    """Effective all2all backend."""
    master_address: str
    """DNS name other ranks use to reach rank 0."""


class GroupChange(StrEnum):
    """Why the current group generation exists."""

    CREATED = "Created"
    RESTARTED = "Restarted"
    REPLACED = "Replaced"


class ParallelDeploymentStatus(_StatusModel):
    """Observed state."""

    observed_generation: int | None = None
    """metadata.generation the status was computed from."""
    conditions: list[Condition] = Field(default_factory=list)
    """Valid, Ready, Progressing, Degraded."""
    config_hash: str | None = None
    """vLLM's ParallelConfig.compute_hash() of the spec (what every rank must agree on)."""
    derived: Derived | None = None
    """Values computed from the spec."""
    replicas: int | None = None
    """DP size of the running group (scale subresource)."""
    selector: str | None = None
    """Label selector of the rank pods (scale subresource)."""
    total_ranks: int | None = None
    """DP ranks in the group."""
    ready_ranks: int | None = None
    """DP ranks whose pod is Ready."""
    ready: str | None = None
    """Ready ranks out of total, like 16/16."""
    group_generation: int = 0
    """How many times the group was created: first creation, restarts and replacements. Rank pods carry it
    in the annotation wideep.dev/group-generation."""
    created_generation: int = 0
    """The group generation whose pods all exist: from then on a missing rank pod is a failure."""
    group_created_time: str | None = None
    """When the current group generation was created."""
    last_group_change: GroupChange | None = None
    """Why the current group generation exists."""
    group_restarts: int = 0
    """Gang restarts since the last spec change or retry."""
    last_restart_time: str | None = None
    """When the group was last recreated."""
    last_restart_reason: str | None = None
    """Why the group was last recreated."""
    retry_token: str | None = None
    """Value of the wideep.dev/retry annotation last honoured."""
    restart_generation: int | None = None
    """metadata.generation the restart budget was last reset for."""
    ranks: list[RankStatus] = Field(default_factory=list)
    """Per-pod rank status."""


class ParallelDeployment(_Model):
    """A vLLM wide expert-parallel deployment: one data-parallel group of rank pods."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = "wideep.dev/v1alpha1"
    kind: str = "ParallelDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ParallelDeploymentSpec
    status: ParallelDeploymentStatus | None = None
