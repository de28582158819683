"""Table tests of the rank planner, one row per layout: the exact args of pod 0 and pod k, GPUs, env,
labels, Services and pod hygiene (docs/vllm-wiring.md §2-§4).

The expected args are written out literally: they are what ``vllm serve`` receives, so a change to any of
them must show up here as a diff a reviewer reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.builders import IMAGE, MODEL, Obj, container, parallel_deployment, set_path, with_changes
from wideep.api import constants as c
from wideep.api import derived
from wideep.api.derived import Layout
from wideep.planning.planner import plan

from .factories import TORCH_ENV, args_of, env_of, env_value, flag_value, gpus, planned, serving_container

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

UID = "0b6f6d8e-1c2a-4f7e-9a51-5c3d2e1f0a99"
EPLB_32 = '{"window_size":1000,"step_interval":3000,"num_redundant_experts":32,"log_balancedness":false}'


def argv(text: str) -> list[str]:
    """A flag per line, its value after it (no value contains a space)."""
    return text.split()


def fqdn(name: str, ns: str = "default") -> str:
    return f"{name}-0.{name}-ranks.{ns}.svc.cluster.local"


def _with_uid(obj: Obj) -> Obj:
    obj["metadata"]["uid"] = UID
    return obj


@dataclass(frozen=True)
class LayoutCase:
    id: str
    obj: Obj
    layout: Layout
    pods: int
    gpus_per_pod: int
    dp_ranks: tuple[tuple[int, ...], ...]
    """DP ranks hosted by each pod (torchrun: the pod's DP rank)."""
    serves_http: tuple[bool, ...]
    k: int
    """The "other" pod whose args are checked besides pod 0."""
    args_0: tuple[str, ...]
    args_k: tuple[str, ...]


EXTERNAL = LayoutCase(
    id="external-lb",
    obj=_with_uid(
        parallel_deployment(
            "ext",
            namespace="prod",
            parallel_config={
                "dataParallelSize": 4,
                "tensorParallelSize": 2,
                "dataParallelExternalLb": True,
                "dataParallelRpcPort": 13345,
                "enableExpertParallel": True,
                "all2allBackend": "deepep_low_latency",
                "enableEplb": True,
                "eplbConfig": {"numRedundantExperts": 32},
                "enableDbo": True,
            },
            containers=[container(args=[MODEL, "--trust-remote-code"])],
        )
    ),
    layout=Layout.EXTERNAL_LB,
    pods=4,
    gpus_per_pod=2,
    dp_ranks=((0,), (1,), (2,), (3,)),
    serves_http=(True,) * 4,
    k=3,
    args_0=(
        MODEL,
        *argv(
            f"""
            --trust-remote-code
            --data-parallel-size 4
            --data-parallel-rank 0
            --data-parallel-address $(VLLM_HOST_IP)
            --data-parallel-rpc-port 13345
            --data-parallel-external-lb
            --tensor-parallel-size 2
            --pipeline-parallel-size 1
            --enable-expert-parallel
            --all2all-backend deepep_low_latency
            --enable-eplb
            --eplb-config {EPLB_32}
            --enable-dbo
            --dbo-decode-token-threshold 32
            --dbo-prefill-token-threshold 512
            --port 8000
            """
        ),
    ),
    args_k=(
        MODEL,
        *argv(
            f"""
            --trust-remote-code
            --data-parallel-size 4
            --data-parallel-rank 3
            --data-parallel-address {fqdn("ext", "prod")}
            --data-parallel-rpc-port 13345
            --data-parallel-external-lb
            --tensor-parallel-size 2
            --pipeline-parallel-size 1
            --enable-expert-parallel
            --all2all-backend deepep_low_latency
            --enable-eplb
            --eplb-config {EPLB_32}
            --enable-dbo
            --dbo-decode-token-threshold 32
            --dbo-prefill-token-threshold 512
            --port 8000
            """
        ),
    ),
)

EXTERNAL_0110 = LayoutCase(
    id="external-lb-vllm-0.11.0",
    obj=parallel_deployment(
        "old",
        vllmVersion="0.11.0",
        parallel_config={
            "dataParallelSize": 2,
            "dataParallelExternalLb": True,
            "enableExpertParallel": True,
            "all2allBackend": "deepep_high_throughput",
        },
    ),
    layout=Layout.EXTERNAL_LB,
    pods=2,
    gpus_per_pod=1,
    dp_ranks=((0,), (1,)),
    serves_http=(True, True),
    k=1,
    # 0.11.0 has neither --data-parallel-external-lb (the rank implies it) nor --all2all-backend (env).
    args_0=(
        MODEL,
        *argv(
            """
            --data-parallel-size 2
            --data-parallel-rank 0
            --data-parallel-address $(VLLM_HOST_IP)
            --data-parallel-rpc-port 29550
            --tensor-parallel-size 1
            --pipeline-parallel-size 1
            --enable-expert-parallel
            --port 8000
            """
        ),
    ),
    args_k=(
        MODEL,
        *argv(
            f"""
            --data-parallel-size 2
            --data-parallel-rank 1
            --data-parallel-address {fqdn("old")}
            --data-parallel-rpc-port 29550
            --tensor-parallel-size 1
            --pipeline-parallel-size 1
            --enable-expert-parallel
            --port 8000
            """
        ),
    ),
)

HYBRID = LayoutCase(
    id="hybrid-lb",
    obj=parallel_deployment(
        "hyb",
        parallel_config={
            "dataParallelSize": 16,
            "dataParallelSizeLocal": 8,
            "dataParallelHybridLb": True,
            "dataParallelRpcPort": 5555,
            "enableExpertParallel": True,
            "all2allBackend": "deepep_high_throughput",
        },
        serving={"port": 8200, "apiServerCount": 8},
    ),
    layout=Layout.HYBRID_LB,
    pods=2,
    gpus_per_pod=8,
    dp_ranks=(tuple(range(8)), tuple(range(8, 16))),
    serves_http=(True, True),
    k=1,
    # --data-parallel-hybrid-lb on the first pod too: its start rank 0 is falsy and would not infer it.
    args_0=(
        MODEL,
        *argv(
            """
            --data-parallel-size 16
            --data-parallel-size-local 8
            --data-parallel-start-rank 0
            --data-parallel-hybrid-lb
            --data-parallel-address $(VLLM_HOST_IP)
            --data-parallel-rpc-port 5555
            --tensor-parallel-size 1
            --pipeline-parallel-size 1
            --enable-expert-parallel
            --all2all-backend deepep_high_throughput
            --port 8200
            --api-server-count 8
            """
        ),
    ),
    args_k=(
        MODEL,
        *argv(
            f"""
            --data-parallel-size 16
            --data-parallel-size-local 8
            --data-parallel-start-rank 8
            --data-parallel-hybrid-lb
            --data-parallel-address {fqdn("hyb")}
            --data-parallel-rpc-port 5555
            --tensor-parallel-size 1
            --pipeline-parallel-size 1
            --enable-expert-parallel
            --all2all-backend deepep_high_throughput
            --port 8200
            --api-server-count 8
            """
        ),
    ),
)

INTERNAL = LayoutCase(
    id="internal-lb",
    obj=parallel_deployment(
        "int",
        parallel_config={"dataParallelSize": 6, "dataParallelSizeLocal": 2, "tensorParallelSize": 2},
        serving={"apiServerCount": 2},
    ),
    layout=Layout.INTERNAL_LB,
    pods=3,
    gpus_per_pod=4,
    dp_ranks=((0, 1), (2, 3), (4, 5)),
    serves_http=(True, False, False),
    k=2,
    args_0=(
        MODEL,
        *argv(
            """
            --data-parallel-size 6
            --data-parallel-size-local 2
            --data-parallel-address $(VLLM_HOST_IP)
            --data-parallel-rpc-port 29550
            --tensor-parallel-size 2
            --pipeline-parallel-size 1
            --port 8000
            --api-server-count 2
            """
        ),
    ),
    # Headless pods serve no HTTP: no --port, and --api-server-count > 1 is an error with --headless.
    args_k=(
        MODEL,
        *argv(
            f"""
            --headless
            --data-parallel-size 6
            --data-parallel-size-local 2
            --data-parallel-start-rank 4
            --data-parallel-address {fqdn("int")}
            --data-parallel-rpc-port 29550
            --tensor-parallel-size 2
            --pipeline-parallel-size 1
            """
        ),
    ),
)

SINGLE = LayoutCase(
    id="single-dp1",
    obj=parallel_deployment("one", parallel_config={"tensorParallelSize": 4, "pipelineParallelSize": 2}),
    layout=Layout.SINGLE,
    pods=1,
    gpus_per_pod=8,
    dp_ranks=((0,),),
    serves_http=(True,),
    k=0,
    args_0=(MODEL, "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2", "--port", "8000"),
    args_k=(MODEL, "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2", "--port", "8000"),
)

TORCHRUN = LayoutCase(
    id="torchrun",
    obj=parallel_deployment(
        "tr",
        parallel_config={
            "dataParallelSize": 2,
            "tensorParallelSize": 2,
            "pipelineParallelSize": 2,
            "enableExpertParallel": True,
            "distributedExecutorBackend": "external_launcher",
        },
        containers=[container("worker", command=["python3", "/scripts/run.py"], args=["--tp-size=2"])],
        restartPolicy={"policy": "Never"},
    ),
    layout=Layout.TORCHRUN,
    pods=8,
    gpus_per_pod=1,
    # dp rank = RANK // (world_size // DP), world_size = PP*TP*DP = 8: ranks 0-3 -> 0, 4-7 -> 1.
    dp_ranks=((0,), (0,), (0,), (0,), (1,), (1,), (1,), (1,)),
    serves_http=(False,) * 8,
    k=5,
    args_0=("--tp-size=2",),
    args_k=("--tp-size=2",),
)

CASES = [EXTERNAL, EXTERNAL_0110, HYBRID, INTERNAL, SINGLE, TORCHRUN]
by_id = pytest.mark.parametrize("case", CASES, ids=[x.id for x in CASES])


# ------------------------------------------------------------------------------------- layout, args


@by_id
def test_layout_and_pods(case: LayoutCase) -> None:
    _, g = planned(case.obj)
    assert g.layout == case.layout
    assert [p.index for p in g.pods] == list(range(case.pods))
    assert [p.name for p in g.pods] == [f"{g.name}-{i}" for i in range(case.pods)]
    assert [p.dp_ranks for p in g.pods] == list(case.dp_ranks)
    assert [p.serves_http for p in g.pods] == list(case.serves_http)


@by_id
def test_args_of_pod_0_and_pod_k(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    assert args_of(pdep, g.pods[0]) == list(case.args_0)
    assert args_of(pdep, g.pods[case.k]) == list(case.args_k)


@by_id
def test_user_args_first_then_operator_flags(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    user = case.obj["spec"]["template"]["spec"]["containers"][0]["args"]
    for pod in g.pods:
        args = args_of(pdep, pod)
        assert args[: len(user)] == user
        operator_part = args[len(user) :]
        if case.layout != Layout.TORCHRUN:
            assert operator_part, "no operator flags"
            assert operator_part[0].startswith("--")


@by_id
def test_command(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    expected = ["python3", "/scripts/run.py"] if case.layout == Layout.TORCHRUN else ["vllm", "serve"]
    for pod in g.pods:
        assert serving_container(pdep, pod)["command"] == expected


@by_id
def test_dp_address_rank0_binds_pod_ip_others_dial_rank0_fqdn(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    ns = case.obj["metadata"].get("namespace", "default")
    assert g.master_address == fqdn(g.name, ns)
    for pod in g.pods:
        address = flag_value(args_of(pdep, pod), "--data-parallel-address")
        if case.layout in (Layout.SINGLE, Layout.TORCHRUN):
            assert address is None
        else:
            assert address == ("$(VLLM_HOST_IP)" if pod.index == 0 else g.master_address)


@by_id
def test_gpu_requests(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    assert g.gpus_per_pod == case.gpus_per_pod
    for pod in g.pods:
        assert gpus(serving_container(pdep, pod)) == (case.gpus_per_pod, case.gpus_per_pod)
    pc = case.obj["spec"]["parallelConfig"]
    world = (
        pc.get("dataParallelSize", 1) * pc.get("tensorParallelSize", 1) * pc.get("pipelineParallelSize", 1)
    )
    assert case.pods * case.gpus_per_pod == world


# ------------------------------------------------------------------------------------------- env


@by_id
def test_env(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    pc = case.obj["spec"]["parallelConfig"]
    world = (
        pc.get("dataParallelSize", 1) * pc.get("tensorParallelSize", 1) * pc.get("pipelineParallelSize", 1)
    )
    for pod in g.pods:
        ctr = serving_container(pdep, pod)
        env = env_of(ctr)
        assert env["VLLM_HOST_IP"] == {
            "name": "VLLM_HOST_IP",
            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
        }
        assert "VLLM_PORT" not in env
        assert env_value(ctr, "GLOO_SOCKET_IFNAME") == env_value(ctr, "NCCL_SOCKET_IFNAME") == "eth0"
        if case.layout == Layout.TORCHRUN:
            assert {k: env_value(ctr, k) for k in TORCH_ENV} == {
                "RANK": str(pod.index),
                "LOCAL_RANK": "0",
                "WORLD_SIZE": str(world),
                "MASTER_ADDR": fqdn(g.name),
                "MASTER_PORT": "29500",
            }
        else:
            assert not set(TORCH_ENV) & set(env)
        if case.obj["spec"].get("vllmVersion") == "0.11.0":
            assert env_value(ctr, "VLLM_ALL2ALL_BACKEND") == pc["all2allBackend"]
        else:
            assert "VLLM_ALL2ALL_BACKEND" not in env


def test_all2all_env_only_on_0110_and_only_when_set() -> None:
    base = EXTERNAL_0110.obj
    for changes, expected_env, expected_flag in [
        ({}, "deepep_high_throughput", None),
        ({"spec.vllmVersion": "0.11.1"}, None, "deepep_high_throughput"),
        ({"spec.parallelConfig.all2allBackend": None}, None, None),
    ]:
        obj = with_changes(base, changes)  # None: unset (the API server prunes nulls)
        pdep, g = planned(obj)
        for pod in g.pods:
            ctr = serving_container(pdep, pod)
            args = args_of(pdep, pod)
            assert env_value(ctr, "VLLM_ALL2ALL_BACKEND") == expected_env, changes
            assert flag_value(args, "--all2all-backend") == expected_flag, changes
            is_0110 = obj["spec"].get("vllmVersion") == "0.11.0"
            assert ("--data-parallel-external-lb" in args) is not is_0110


def test_socket_interface_configurable() -> None:
    obj = with_changes(INTERNAL.obj, {"spec.network": {"socketInterface": "ib0"}})
    pdep, g = planned(obj)
    for pod in g.pods:
        ctr = serving_container(pdep, pod)
        assert env_value(ctr, "GLOO_SOCKET_IFNAME") == env_value(ctr, "NCCL_SOCKET_IFNAME") == "ib0"


def test_user_env_kept_before_operator_env() -> None:
    obj = with_changes(EXTERNAL.obj, {"spec.template.spec.containers[0].env": [{"name": "A", "value": "1"}]})
    pdep, g = planned(obj)
    env = serving_container(pdep, g.pods[1])["env"]
    assert env[0] == {"name": "A", "value": "1"}
    assert env_of(serving_container(pdep, g.pods[1]))["WIDEEP_POD_INDEX"]["value"] == "1"


# --------------------------------------------------------------------------------------- labels


@by_id
def test_labels_and_annotations(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    cfg_hash = derived.vllm_config_hash(pdep.spec.parallel_config)
    for pod in g.pods:
        meta = pod.body["metadata"]
        labels = meta["labels"]
        assert labels[c.LABEL_DEPLOYMENT] == g.name
        assert labels[c.LABEL_POD_INDEX] == str(pod.index)
        assert labels[c.LABEL_DP_RANK] == str(case.dp_ranks[pod.index][0])
        assert labels[c.LABEL_CONFIG_HASH] == cfg_hash[:32]
        assert labels[c.LABEL_COMPONENT] == c.COMPONENT_RANK
        assert labels[c.LABEL_SERVES_HTTP] == ("true" if case.serves_http[pod.index] else "false")
        ranks = case.dp_ranks[pod.index]
        assert meta["annotations"][c.ANNOTATION_RANKS] == (
            str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
        )
        assert meta["annotations"][c.ANNOTATION_GROUP_GENERATION] == "1"
        assert env_value(serving_container(pdep, pod), "WIDEEP_CONFIG_HASH") == cfg_hash


def test_config_hash_label_follows_hash_relevant_fields() -> None:
    _, g1 = planned(EXTERNAL.obj)
    _, g2 = planned(with_changes(EXTERNAL.obj, {"spec.parallelConfig.eplbConfig.numRedundantExperts": 16}))
    _, g3 = planned(with_changes(EXTERNAL.obj, {"spec.template.spec.containers[0].image": "other:1"}))
    label = c.LABEL_CONFIG_HASH
    assert g1.pods[0].body["metadata"]["labels"][label] != g2.pods[0].body["metadata"]["labels"][label]
    assert g1.pods[0].body["metadata"]["labels"][label] == g3.pods[0].body["metadata"]["labels"][label]


def test_operator_labels_win_over_template_labels() -> None:
    obj = with_changes(
        HYBRID.obj,
        {
            "spec.template.metadata": {
                "labels": {"app": "x", c.LABEL_POD_INDEX: "7"},
                "annotations": {"a": "b"},
            }
        },
    )
    _, g = planned(obj)
    meta = g.pods[1].body["metadata"]
    assert meta["labels"]["app"] == "x"
    assert meta["labels"][c.LABEL_POD_INDEX] == "1"
    assert meta["annotations"]["a"] == "b"


def test_group_generation_annotation() -> None:
    _, g = planned(EXTERNAL.obj, group_generation=7)
    assert {p.body["metadata"]["annotations"][c.ANNOTATION_GROUP_GENERATION] for p in g.pods} == {"7"}


@by_id
def test_owner_references_only_with_uid(case: LayoutCase) -> None:
    has_uid = "uid" in case.obj["metadata"]
    for obj, expect in [(case.obj, has_uid), (_with_uid(with_changes(case.obj, {})), True)]:
        _, g = planned(obj)
        for item in g.objects():
            owners = item["metadata"].get("ownerReferences")
            if expect:
                assert owners == [
                    {
                        "apiVersion": c.API_VERSION,
                        "kind": c.KIND,
                        "name": g.name,
                        "uid": UID,
                        "controller": True,
                    }
                ], item["metadata"]["name"]
            else:
                assert owners is None, item["metadata"]["name"]


# ---------------------------------------------------------------------------------- pod hygiene


@by_id
def test_pod_hygiene(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    ns = case.obj["metadata"].get("namespace", "default")
    for pod in g.pods:
        spec = pod.body["spec"]
        assert pod.body["metadata"]["namespace"] == ns
        assert spec["enableServiceLinks"] is False
        assert spec["restartPolicy"] == "Never"
        assert spec["hostname"] == pod.name
        assert spec["subdomain"] == f"{g.name}-ranks"
        ctr = serving_container(pdep, pod)
        (mount,) = [m for m in ctr["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        (vol,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert vol["emptyDir"] == {"medium": "Memory"}


def test_shm_size_limit() -> None:
    _pdep, g = planned(with_changes(EXTERNAL.obj, {"spec.network.shmSizeLimit": "16Gi"}))
    for pod in g.pods:
        (vol,) = [v for v in pod.body["spec"]["volumes"] if v["name"] == "wideep-dshm"]
        assert vol["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}


def test_user_shm_mount_is_kept() -> None:
    ctr = container(volumeMounts=[{"name": "mine", "mountPath": "/dev/shm"}])
    obj = parallel_deployment(
        "s",
        parallel_config={"dataParallelSize": 2, "dataParallelExternalLb": True},
        containers=[ctr],
    )
    set_path(obj, "spec.template.spec.volumes", [{"name": "mine", "emptyDir": {}}])
    _, g = planned(obj)
    spec = g.pods[0].body["spec"]
    assert spec["volumes"] == [{"name": "mine", "emptyDir": {}}]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "mine", "mountPath": "/dev/shm"}]


@by_id
def test_probes(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    port = pdep.spec.serving.port
    for pod in g.pods:
        ctr = serving_container(pdep, pod)
        if not case.serves_http[pod.index]:
            assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(ctr)
            assert flag_value(args_of(pdep, pod), "--port") is None
            continue
        startup = ctr["startupProbe"]
        assert startup["httpGet"] == {"path": "/health", "port": port}
        assert startup["periodSeconds"] * startup["failureThreshold"] == 1800  # startup.timeoutSeconds
        assert ctr["readinessProbe"]["httpGet"] == {"path": "/health", "port": port}
        assert ctr["livenessProbe"]["httpGet"] == {"path": "/health", "port": port}
        assert {"name": "http", "containerPort": port, "protocol": "TCP"} in ctr["ports"]
        assert flag_value(args_of(pdep, pod), "--port") == str(port)


@pytest.mark.parametrize("timeout", [60, 65, 599, 1800, 86_400])
def test_startup_probe_budget_is_the_startup_timeout(timeout: int) -> None:
    obj = with_changes(
        EXTERNAL.obj, {"spec.startup": {"timeoutSeconds": timeout, "readinessPath": "/v1/models"}}
    )
    pdep, g = planned(obj)
    for pod in g.pods:
        ctr = serving_container(pdep, pod)
        probe = ctr["startupProbe"]
        budget = probe["periodSeconds"] * probe["failureThreshold"]
        assert timeout <= budget < timeout + probe["periodSeconds"]
        assert probe.get("initialDelaySeconds", 0) == 0
        assert probe["httpGet"]["path"] == ctr["readinessProbe"]["httpGet"]["path"] == "/v1/models"


# -------------------------------------------------------------------------------------- services


def _services(case: LayoutCase) -> dict[str, dict[str, Any]]:
    _, g = planned(case.obj)
    assert all(s["kind"] == "Service" for s in g.services)
    out = {s["metadata"]["name"]: s for s in g.services}
    assert len(out) == len(g.services), "duplicate Service names"
    return out


def _selects(svc: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())


@by_id
def test_services(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    svcs = _services(case)
    name = g.name
    pc = pdep.spec.parallel_config
    pods = {p.index: p.body["metadata"]["labels"] for p in g.pods}

    headless = svcs.pop(f"{name}-ranks")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert all(_selects(headless, labels) for labels in pods.values())

    master = svcs.pop(f"{name}-master")
    assert [i for i, labels in pods.items() if _selects(master, labels)] == [0]
    assert {(p["name"], p["port"]) for p in master["spec"]["ports"]} == {
        ("dp-rpc", pc.data_parallel_rpc_port),
        ("torch-master", pc.data_parallel_master_port),
    }

    if case.layout == Layout.TORCHRUN:
        assert f"{name}-http" not in svcs
    else:
        http = svcs.pop(f"{name}-http")
        assert [i for i, labels in pods.items() if _selects(http, labels)] == [
            i for i, s in enumerate(case.serves_http) if s
        ]
        assert [(p["name"], p["port"]) for p in http["spec"]["ports"]] == [("http", pdep.spec.serving.port)]

    # No Service per rank, in any layout: a rank is addressed by its pod's DNS name (headless Service).
    assert not svcs, f"unexpected Services: {sorted(svcs)}"
    for svc in g.services:
        assert svc["metadata"]["labels"][c.LABEL_DEPLOYMENT] == name


# ------------------------------------------------------------------------------- flags by option


def test_hybrid_lb_flag_on_every_pod() -> None:
    obj = with_changes(HYBRID.obj, {"spec.parallelConfig.dataParallelSize": 64})
    pdep, g = planned(obj)
    assert len(g.pods) == 8
    for pod in g.pods:
        args = args_of(pdep, pod)
        assert args.count("--data-parallel-hybrid-lb") == 1
        assert flag_value(args, "--data-parallel-start-rank") == str(8 * pod.index)
        assert flag_value(args, "--data-parallel-size-local") == "8"
        assert "--headless" not in args
        assert "--data-parallel-rank" not in args


def test_internal_lb_without_local_size_is_one_pod_with_every_rank() -> None:
    obj = parallel_deployment("one-pod", parallel_config={"dataParallelSize": 4})
    pdep, g = planned(obj)
    assert g.layout == Layout.INTERNAL_LB
    assert len(g.pods) == 1
    assert g.pods[0].dp_ranks == (0, 1, 2, 3)
    assert gpus(serving_container(pdep, g.pods[0])) == (4, 4)
    args = args_of(pdep, g.pods[0])
    assert flag_value(args, "--data-parallel-size-local") == "4"
    assert "--headless" not in args


@pytest.mark.parametrize(
    ("pc", "expected"),
    [
        ({"eplbConfig": {"numRedundantExperts": 32}}, (1000, 3000, 32, False)),
        (
            {
                "eplbConfig": {
                    "windowSize": 10,
                    "stepInterval": 20,
                    "numRedundantExperts": 2,
                    "logBalancedness": True,
                }
            },
            (10, 20, 2, True),
        ),
        # Deprecated top-level fields are forwarded into eplbConfig, as vLLM's __post_init__ does.
        (
            {"eplbConfig": {"windowSize": 10}, "numRedundantExperts": 4, "eplbStepInterval": 7},
            (10, 7, 4, False),
        ),
        ({"eplbWindowSize": 5, "eplbLogBalancedness": True}, (5, 3000, 0, True)),
    ],
)
def test_eplb_config_json(pc: dict[str, Any], expected: tuple[Any, ...]) -> None:
    obj = with_changes(EXTERNAL.obj, {"spec.parallelConfig.eplbConfig": {}})
    obj["spec"]["parallelConfig"].update(pc)
    pdep, g = planned(obj)
    values = {flag_value(args_of(pdep, p), "--eplb-config") for p in g.pods}
    assert len(values) == 1
    (raw,) = values
    assert raw is not None
    assert json.loads(raw) == dict(
        zip(
            ("window_size", "step_interval", "num_redundant_experts", "log_balancedness"),
            expected,
            strict=True,
        )
    )
    assert " " not in raw  # one argv element, compact
    for pod in g.pods:
        args = args_of(pdep, pod)
        assert args.count("--enable-eplb") == 1
        assert not [
            a for a in args if a.startswith(("--num-redundant-experts", "--eplb-window", "--eplb-step"))
        ]


def test_no_eplb_flags_without_eplb() -> None:
    obj = parallel_deployment(
        "plain", parallel_config={"dataParallelSize": 2, "dataParallelExternalLb": True}
    )
    pdep, g = planned(obj)
    args = args_of(pdep, g.pods[1])
    assert not [
        a
        for a in args
        if a.startswith("--") and ("eplb" in a or "dbo" in a or "expert" in a or "all2all" in a)
    ]


def test_dbo_flags() -> None:
    obj = with_changes(
        EXTERNAL.obj,
        {
            "spec.parallelConfig.dboDecodeTokenThreshold": 0,
            "spec.parallelConfig.dboPrefillTokenThreshold": 64,
        },
    )
    pdep, g = planned(obj)
    args = args_of(pdep, g.pods[2])
    i = args.index("--enable-dbo")
    assert args[i : i + 5] == [
        "--enable-dbo",
        "--dbo-decode-token-threshold",
        "0",
        "--dbo-prefill-token-threshold",
        "64",
    ]


@pytest.mark.parametrize(
    ("pc", "flags"),
    [
        ({"decodeContextParallelSize": 2}, ["--decode-context-parallel-size", "2"]),
        ({"expertPlacementStrategy": "round_robin"}, ["--expert-placement-strategy", "round_robin"]),
        ({"distributedExecutorBackend": "mp"}, ["--distributed-executor-backend", "mp"]),
        ({"disableCustomAllReduce": True}, ["--disable-custom-all-reduce"]),
    ],
)
def test_other_common_flags(pc: dict[str, Any], flags: list[str]) -> None:
    obj = with_changes(EXTERNAL.obj, {})
    obj["spec"]["parallelConfig"].update(pc)
    pdep, g = planned(obj)
    for pod in g.pods:
        args = args_of(pdep, pod)
        i = args.index(flags[0])
        assert args[i : i + len(flags)] == flags
    base_pdep, base = planned(EXTERNAL.obj)
    assert flags[0] not in args_of(base_pdep, base.pods[0])


def test_api_server_count_only_when_set() -> None:
    pdep, g = planned(EXTERNAL.obj)
    assert all("--api-server-count" not in args_of(pdep, p) for p in g.pods)


def test_serving_container_by_name_and_user_command() -> None:
    sidecar = container("sidecar", image="busybox", args=["sleep", "inf"])
    serving = container("engine", args=[MODEL], command=["/opt/vllm-wrapper", "serve"])
    obj = parallel_deployment(
        "named",
        parallel_config={"dataParallelSize": 2, "dataParallelExternalLb": True, "tensorParallelSize": 2},
        containers=[sidecar, serving],
        serving={"containerName": "engine"},
    )
    _pdep, g = planned(obj)
    for pod in g.pods:
        side, eng = pod.body["spec"]["containers"]
        assert side == {"name": "sidecar", "image": "busybox", "args": ["sleep", "inf"]}
        assert eng["command"] == ["/opt/vllm-wrapper", "serve"]
        assert flag_value(eng["args"], "--data-parallel-rank") == str(pod.index)
        assert gpus(eng) == (2, 2)


# ------------------------------------------------------------------------------------- preflight


@by_id
def test_preflight_init_container(case: LayoutCase) -> None:
    _, g = planned(case.obj)
    assert all(
        "wideep-preflight" not in [x["name"] for x in p.body["spec"].get("initContainers", [])]
        for p in g.pods
    )
    user_init = container("user-init", image="busybox", args=["true"])
    obj = with_changes(
        case.obj,
        {
            "spec.preflight": {"enabled": True, "timeoutSeconds": 120},
            "spec.template.spec.initContainers": [user_init],
        },
    )
    _pdep, g = planned(obj)
    image = case.obj["spec"]["template"]["spec"]["containers"][0].get("image", IMAGE)
    for pod in g.pods:
        pre, user = pod.body["spec"]["initContainers"]
        assert user == user_init
        assert pre["name"] == "wideep-preflight"
        assert pre["command"] == ["wideep", "preflight"]
        assert pre["image"] == image
        env = {e["name"]: e for e in pre["env"]}
        assert env["VLLM_HOST_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert env["WIDEEP_POD_INDEX"]["value"] == str(pod.index)
        assert env["WIDEEP_DP_RANK_START"]["value"] == str(case.dp_ranks[pod.index][0])
        assert env["WIDEEP_DP_SIZE_LOCAL"]["value"] == str(len(case.dp_ranks[pod.index]))
        assert env["WIDEEP_MASTER_ADDR"]["value"] == g.master_address
        assert env["WIDEEP_PREFLIGHT_TIMEOUT"]["value"] == "120"
        assert "VLLM_PORT" not in env
        assert "nvidia.com/gpu" not in json.dumps(pre.get("resources", {}))
    obj2 = with_changes(obj, {"spec.preflight.image": "wideep:dev"})
    _, g2 = planned(obj2)
    assert g2.pods[0].body["spec"]["initContainers"][0]["image"] == "wideep:dev"


# ------------------------------------------------------------------------------------ determinism


@by_id
def test_plan_is_deterministic_and_leaves_its_input_alone(case: LayoutCase) -> None:
    pdep, g = planned(case.obj)
    before = pdep.model_dump(mode="json")
    again = plan(pdep)
    assert json.dumps(again.objects(), sort_keys=True) == json.dumps(g.objects(), sort_keys=True)
    assert pdep.model_dump(mode="json") == before
    # Pods share no mutable parts: the controller may patch one without touching the others.
    first, last = again.pods[0].body, again.pods[-1].body
    first["spec"]["containers"][0]["args"].append("--mutated")
    first["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
    if len(again.pods) > 1:
        assert "--mutated" not in last["spec"]["containers"][0]["args"]
        assert {"name": "X", "value": "1"} not in last["spec"]["containers"][0]["env"]


def test_pod_port_names_stay_unique() -> None:
    """Kubernetes refuses a pod with two ports of one name: a user port named http keeps the name."""
    sidecar = container("proxy", image="envoy", args=[], ports=[{"name": "http", "containerPort": 9000}])
    obj = parallel_deployment(
        "ports",
        parallel_config={"dataParallelSize": 2, "dataParallelExternalLb": True},
        containers=[container(), sidecar],
    )
    pdep, g = planned(obj)
    for pod in g.pods:
        names = [p.get("name") for ctr in pod.body["spec"]["containers"] for p in ctr.get("ports", [])]
        named = [n for n in names if n is not None]
        assert len(named) == len(set(named)), names
        assert {"containerPort": 8000, "protocol": "TCP"} in serving_container(pdep, pod)["ports"]
