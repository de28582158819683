"""The rank planner: a validated ParallelDeployment → the exact Services and Pods of its group.

Pure: no kopf, no Kubernetes client, no clock, no I/O. Same input, same output, byte for byte.
The vLLM facts it relies on: docs/vllm-wiring.md §1-§4 (layouts, rank formulas, flags, addresses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from wideep.api import constants as c
from wideep.api import derived
from wideep.api.derived import Layout, Shape
from wideep.api.models import Container, ParallelConfig, ParallelDeployment, ParallelDeploymentSpec

HASH_LABEL_CHARS = 32  # label values are at most 63 characters
SHM_VOLUME = "wideep-dshm"
PREFLIGHT_CONTAINER = "wideep-preflight"


@dataclass(frozen=True)
class PodPlan:
    index: int
    name: str
    dp_ranks: tuple[int, ...]
    serves_http: bool
    body: dict[str, Any]


@dataclass(frozen=True)
class GroupPlan:
    name: str
    namespace: str
    shape: Shape
    config_hash: str
    template_hash: str
    master_address: str
    services: list[dict[str, Any]] = field(default_factory=list)
    pods: list[PodPlan] = field(default_factory=list)

    @property
    def layout(self) -> Layout:
        return self.shape.layout

    @property
    def gpus_per_pod(self) -> int:
        return self.shape.gpus_per_pod

    @property
    def selector(self) -> str:
        return f"{c.LABEL_DEPLOYMENT}={self.name},{c.LABEL_COMPONENT}={c.COMPONENT_RANK}"

    def objects(self) -> list[dict[str, Any]]:
        return [*self.services, *(p.body for p in self.pods)]


# ------------------------------------------------------------------------------------------- names


def headless_service_name(name: str) -> str:
    return f"{name}-ranks"


def master_service_name(name: str) -> str:
    return f"{name}-master"


def http_service_name(name: str) -> str:
    return f"{name}-http"


def pod_name(name: str, index: int) -> str:
    return f"{name}-{index}"


def pod_fqdn(name: str, index: int, namespace: str, cluster_domain: str) -> str:
    return f"{pod_name(name, index)}.{headless_service_name(name)}.{namespace}.svc.{cluster_domain}"


def format_ranks(ranks: tuple[int, ...]) -> str:
    if len(ranks) == 1:
        return str(ranks[0])
    return f"{ranks[0]}-{ranks[-1]}"


# ------------------------------------------------------------------------------------------- flags


def _eplb_json(pc: ParallelConfig) -> str:
    e = derived.effective_eplb(pc)
    return json.dumps(
        {
            "window_size": e.window_size,
            "step_interval": e.step_interval,
            "num_redundant_experts": e.num_redundant_experts,
            "log_balancedness": e.log_balancedness,
        },
        separators=(",", ":"),
    )


def common_flags(spec: ParallelDeploymentSpec) -> list[str]:
    """Flags every rank of the group carries identically (the hash-relevant ones among them)."""
    pc = spec.parallel_config
    out = [
        "--tensor-parallel-size",
        str(pc.tensor_parallel_size),
        "--pipeline-parallel-size",
        str(pc.pipeline_parallel_size),
    ]
    if pc.enable_expert_parallel:
        out.append("--enable-expert-parallel")
    if pc.all2all_backend is not None and spec.vllm_version != "0.11.0":
        out += ["--all2all-backend", pc.all2all_backend]
    if pc.enable_eplb:
        out += ["--enable-eplb", "--eplb-config", _eplb_json(pc)]
    if pc.expert_placement_strategy != "linear":
        out += ["--expert-placement-strategy", pc.expert_placement_strategy]
    if pc.enable_dbo:
        out += [
            "--enable-dbo",
            "--dbo-decode-token-threshold",
            str(pc.dbo_decode_token_threshold),
            "--dbo-prefill-token-threshold",
            str(pc.dbo_prefill_token_threshold),
        ]
    if pc.decode_context_parallel_size != 1:
        out += ["--decode-context-parallel-size", str(pc.decode_context_parallel_size)]
    if pc.distributed_executor_backend is not None:
        out += ["--distributed-executor-backend", pc.distributed_executor_backend]
    if pc.data_parallel_backend != "mp":
        out += ["--data-parallel-backend", pc.data_parallel_backend]
    if pc.disable_custom_all_reduce:
        out.append("--disable-custom-all-reduce")
    return out


def dp_flags(spec: ParallelDeploymentSpec, lay: Layout, ranks: tuple[int, ...], address: str) -> list[str]:
    """The data-parallel flags of the pod hosting DP ``ranks`` (docs/vllm-wiring.md §2, §3, §4)."""
    pc = spec.parallel_config
    dp = str(pc.data_parallel_size)
    rpc = ["--data-parallel-address", address, "--data-parallel-rpc-port", str(pc.data_parallel_rpc_port)]
    if lay == Layout.EXTERNAL_LB:
        out = ["--data-parallel-size", dp, "--data-parallel-rank", str(ranks[0]), *rpc]
        if spec.vllm_version != "0.11.0":  # 0.11.0 has no such flag: the rank implies external LB
            out.append("--data-parallel-external-lb")
        return out
    local = str(len(ranks))
    if lay == Layout.HYBRID_LB:
        return [
            "--data-parallel-size",
            dp,
            "--data-parallel-size-local",
            local,
            "--data-parallel-start-rank",
            str(ranks[0]),
            "--data-parallel-hybrid-lb",
            *rpc,
        ]
    if lay == Layout.INTERNAL_LB:
        out = ["--data-parallel-size", dp, "--data-parallel-size-local", local]
        if ranks[0] > 0:  # every pod but the head runs headless
            out = ["--headless", *out, "--data-parallel-start-rank", str(ranks[0])]
        return [*out, *rpc]
    return []


def serving_flags(spec: ParallelDeploymentSpec, serves_http: bool) -> list[str]:
    if not serves_http:
        return []
    out = ["--port", str(spec.serving.port)]
    if spec.serving.api_server_count is not None:
        out += ["--api-server-count", str(spec.serving.api_server_count)]
    return out


# ------------------------------------------------------------------------------------------- objects


def _labels(name: str) -> dict[str, str]:
    return {c.LABEL_DEPLOYMENT: name, c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}


def _owner(pdep: ParallelDeployment) -> list[dict[str, Any]]:
    uid = pdep.metadata.get("uid")
    if not uid:
        return []
    return [
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "name": pdep.metadata["name"],
            "uid": uid,
            "controller": True,
        }
    ]


def _meta(pdep: ParallelDeployment, name: str, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": pdep.metadata.get("namespace", "default"),
        "labels": labels,
    }
    owners = _owner(pdep)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def _service(
    pdep: ParallelDeployment,
    name: str,
    selector: dict[str, str],
    ports: list[dict[str, Any]],
    *,
    headless: bool = False,
    role: str,
) -> dict[str, Any]:
    labels = {**_labels(pdep.metadata["name"]), c.LABEL_COMPONENT: role}
    spec: dict[str, Any] = {"selector": selector, "ports": [dict(p) for p in ports]}
    if headless:
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = True
    else:
        spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(pdep, name, labels), "spec": spec}


def _port(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}


def plan_services(pdep: ParallelDeployment, lay: Layout) -> list[dict[str, Any]]:
    """The group's three Services (two torchrun-style, which serves no HTTP)."""
    spec = pdep.spec
    pc = spec.parallel_config
    name = pdep.metadata["name"]
    base_sel = {c.LABEL_DEPLOYMENT: name, c.LABEL_COMPONENT: c.COMPONENT_RANK}
    rpc = _port("dp-rpc", pc.data_parallel_rpc_port)
    master = _port("torch-master", pc.data_parallel_master_port)
    http = _port("http", spec.serving.port)
    out = [
        _service(pdep, headless_service_name(name), base_sel, [rpc, master], headless=True, role="ranks"),
        _service(
            pdep,
            master_service_name(name),
            {**base_sel, c.LABEL_POD_INDEX: "0"},
            [rpc, master],
            role="master",
        ),
    ]
    if lay != Layout.TORCHRUN:
        out.append(
            _service(
                pdep, http_service_name(name), {**base_sel, c.LABEL_SERVES_HTTP: "true"}, [http], role="http"
            )
        )
    # No Service per rank: each rank already has a stable DNS name through the headless Service
    # (pod_fqdn: <name>-<r>.<name>-ranks), and the HTTP Service's EndpointSlices say which ranks are Ready.
    # A Service per rank would double the objects to create and the endpoint controllers' writes.
    return out


def _serving_container_index(spec: ParallelDeploymentSpec) -> int:
    wanted = spec.serving.container_name
    if wanted is None:
        return 0
    for i, ct in enumerate(spec.template.spec.containers):
        if ct.name == wanted:
            return i
    raise ValueError(f"spec.serving.containerName {wanted!r} names no container")


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _probe(path: str, port: int, period: int, failure: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failure,
        "timeoutSeconds": 5,
    }


def _base_pod_spec(spec: ParallelDeploymentSpec, name: str, gpus: int) -> tuple[dict[str, Any], int]:
    """The parts of the pod spec every rank shares, as JSON-ready data."""
    pod_spec: dict[str, Any] = spec.template.spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    idx = _serving_container_index(spec)
    ctr: dict[str, Any] = pod_spec["containers"][idx]
    resources = ctr.setdefault("resources", {})
    for key in ("limits", "requests"):
        resources.setdefault(key, {})["nvidia.com/gpu"] = str(gpus)
    mounts = ctr.setdefault("volumeMounts", [])
    if not any(m.get("mountPath") == "/dev/shm" for m in mounts):
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
        empty_dir: dict[str, Any] = {"medium": "Memory"}
        if spec.network.shm_size_limit:
            empty_dir["sizeLimit"] = spec.network.shm_size_limit
        pod_spec.setdefault("volumes", []).append({"name": SHM_VOLUME, "emptyDir": empty_dir})
    ctr.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
    env = ctr.setdefault("env", [])
    env.append(_field_env("VLLM_HOST_IP", "status.podIP"))
    if spec.network.socket_interface:
        env += [
            {"name": "GLOO_SOCKET_IFNAME", "value": spec.network.socket_interface},
            {"name": "NCCL_SOCKET_IFNAME", "value": spec.network.socket_interface},
        ]
    pc = spec.parallel_config
    if pc.all2all_backend is not None and spec.vllm_version == "0.11.0":
        env.append({"name": "VLLM_ALL2ALL_BACKEND", "value": pc.all2all_backend})
    pod_spec["enableServiceLinks"] = False  # Kubernetes would inject VLLM_* service variables (VLLM_PORT)
    pod_spec["restartPolicy"] = "Never"  # a restarted rank cannot rejoin: the group restarts as a gang
    pod_spec["subdomain"] = headless_service_name(name)
    return pod_spec, idx


def _preflight_container(
    spec: ParallelDeploymentSpec, serving: Container, env: list[dict[str, Any]]
) -> dict[str, Any]:
    image = spec.preflight.image or serving.image
    out: dict[str, Any] = {
        "name": PREFLIGHT_CONTAINER,
        "command": ["wideep", "preflight"],
        "env": env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    if image:
        out["image"] = image
    return out


def plan(pdep: ParallelDeployment, group_generation: int = 1) -> GroupPlan:
    """Every Service and Pod of the group. ``group_generation`` counts gang (re)creations."""
    spec = pdep.spec
    pc = spec.parallel_config
    name = pdep.metadata["name"]
    namespace = pdep.metadata.get("namespace", "default")
    shape = derived.shape(pc)
    lay = shape.layout
    cfg_hash = derived.vllm_config_hash(pc)
    tpl_hash = derived.template_hash(spec)
    master_fqdn = pod_fqdn(name, 0, namespace, spec.network.cluster_domain)
    world = derived.world_size_across_dp(pc)

    base_spec, ctr_idx = _base_pod_spec(spec, name, shape.gpus_per_pod)
    base_json = json.dumps(base_spec)
    user_args: list[str] = list(spec.template.spec.containers[ctr_idx].args or [])
    serving_ctr = spec.template.spec.containers[ctr_idx]
    has_command = serving_ctr.command is not None
    common = common_flags(spec)
    tmeta = spec.template.metadata
    user_labels = dict(tmeta.labels or {}) if tmeta else {}
    user_annotations = dict(tmeta.annotations or {}) if tmeta else {}
    startup_failures = max(1, -(-spec.startup.timeout_seconds // 10))
    owners = _owner(pdep)

    pods: list[PodPlan] = []
    for i in range(shape.pods):
        ranks = shape.dp_ranks(i)
        serves_http = shape.serves_http_everywhere or (lay == Layout.INTERNAL_LB and i == 0)
        # Rank 0 binds its ZMQ sockets on this address, so it must be its own pod IP; a Service
        # ClusterIP cannot be bound (docs/vllm-wiring.md §4). Others dial rank 0's stable DNS name.
        address = "$(VLLM_HOST_IP)" if i == 0 else master_fqdn
        pod_spec: dict[str, Any] = json.loads(base_json)
        pod_spec["hostname"] = pod_name(name, i)
        ctr = pod_spec["containers"][ctr_idx]
        extra_env: list[dict[str, Any]] = [
            {"name": "WIDEEP_DEPLOYMENT", "value": name},
            {"name": "WIDEEP_POD_INDEX", "value": str(i)},
            {"name": "WIDEEP_DP_SIZE", "value": str(pc.data_parallel_size)},
            {"name": "WIDEEP_DP_RANK_START", "value": str(ranks[0])},
            {"name": "WIDEEP_DP_SIZE_LOCAL", "value": str(len(ranks))},
            {"name": "WIDEEP_MASTER_ADDR", "value": master_fqdn},
            {"name": "WIDEEP_MASTER_PORT", "value": str(pc.data_parallel_master_port)},
            {"name": "WIDEEP_CONFIG_HASH", "value": cfg_hash},
        ]
        if lay == Layout.TORCHRUN:
            extra_env += [
                {"name": "RANK", "value": str(i)},
                {"name": "LOCAL_RANK", "value": "0"},
                {"name": "WORLD_SIZE", "value": str(world)},
                {"name": "LOCAL_WORLD_SIZE", "value": "1"},
                {"name": "MASTER_ADDR", "value": master_fqdn},
                {"name": "MASTER_PORT", "value": str(pc.data_parallel_master_port)},
            ]
            args = list(user_args)
        else:
            if not has_command:
                ctr["command"] = ["vllm", "serve"]
            args = [
                *user_args,
                *dp_flags(spec, lay, ranks, address),
                *common,
                *serving_flags(spec, serves_http),
            ]
        ctr["env"] = ctr["env"] + extra_env
        ctr["args"] = args
        if serves_http:
            ctr.setdefault(
                "startupProbe", _probe(spec.startup.readiness_path, spec.serving.port, 10, startup_failures)
            )
            ctr.setdefault("readinessProbe", _probe(spec.startup.readiness_path, spec.serving.port, 10, 3))
            ctr.setdefault("livenessProbe", _probe("/health", spec.serving.port, 30, 3))
            ports = ctr.setdefault("ports", [])
            if not any(p.get("containerPort") == spec.serving.port for p in ports):
                http_port: dict[str, Any] = {"containerPort": spec.serving.port, "protocol": "TCP"}
                # Port names are unique in a pod: if a user port (of any container) is already named
                # http, ours stays unnamed (the Services and probes use the number).
                named = {
                    p.get("name")
                    for x in [*pod_spec["containers"], *pod_spec.get("initContainers", [])]
                    for p in x.get("ports") or []
                }
                if "http" not in named:
                    http_port = {"name": "http", **http_port}
                ports.append(http_port)
        if spec.preflight.enabled:
            pre_env = [
                _field_env("VLLM_HOST_IP", "status.podIP"),
                *extra_env,
                {"name": "WIDEEP_PREFLIGHT_TIMEOUT", "value": str(spec.preflight.timeout_seconds)},
            ]
            if spec.network.socket_interface:
                pre_env.append({"name": "GLOO_SOCKET_IFNAME", "value": spec.network.socket_interface})
            pod_spec["initContainers"] = [
                _preflight_container(spec, serving_ctr, pre_env),
                *list(pod_spec.get("initContainers", [])),
            ]
        labels = {
            **user_labels,
            c.LABEL_DEPLOYMENT: name,
            c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE,
            c.LABEL_COMPONENT: c.COMPONENT_RANK,
            c.LABEL_POD_INDEX: str(i),
            c.LABEL_DP_RANK: str(ranks[0]),
            c.LABEL_CONFIG_HASH: cfg_hash[:HASH_LABEL_CHARS],
            c.LABEL_TEMPLATE_HASH: tpl_hash[:HASH_LABEL_CHARS],
            c.LABEL_SERVES_HTTP: "true" if serves_http else "false",
        }
        annotations = {
            **user_annotations,
            c.ANNOTATION_RANKS: format_ranks(ranks),
            c.ANNOTATION_GROUP_GENERATION: str(group_generation),
        }
        meta: dict[str, Any] = {
            "name": pod_name(name, i),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        }
        if owners:
            meta["ownerReferences"] = owners
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
        pods.append(PodPlan(i, pod_name(name, i), ranks, serves_http, body))

    return GroupPlan(
        name=name,
        namespace=namespace,
        shape=shape,
        config_hash=cfg_hash,
        template_hash=tpl_hash,
        master_address=master_fqdn,
        services=plan_services(pdep, lay),
        pods=pods,
    )


def plan_objects(pdep: ParallelDeployment) -> list[dict[str, Any]]:
    return plan(pdep).objects()
