"""Helpers for the planner tests: plan a manifest, read a rendered pod, and random VALID specs.

Manifests come from ``tests/support/builders.py`` (plain dicts, camelCase, as the API server stores
them). ``valid_deployments()`` is a hypothesis strategy of ParallelDeployment dicts that are valid by
construction across every layout (external LB, hybrid LB, internal LB, single, torchrun); the
property tests assert that ``validate_object`` agrees, so the strategy cannot drift into invalid specs
unnoticed.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.support.builders import MODEL, Obj, parallel_deployment
from wideep.api.models import ALL2ALL_BACKENDS, DEEPEP_BACKENDS, ParallelDeployment
from wideep.api.validate import validate_object
from wideep.planning.planner import GroupPlan, PodPlan, plan

LAYOUT_NAMES = ("external", "hybrid", "internal", "single", "torchrun")
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
TORCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# --------------------------------------------------------------------------------------- reading


def planned(obj: Obj, group_generation: int = 1) -> tuple[ParallelDeployment, GroupPlan]:
    """Validate ``obj`` as the controller does, then plan it. Fails loudly on an invalid manifest."""
    verdict = validate_object(obj)
    assert verdict.ok, [str(e) for e in verdict.errors]
    assert verdict.obj is not None
    return verdict.obj, plan(verdict.obj, group_generation)


def serving_container(pdep: ParallelDeployment, pod: PodPlan | dict[str, Any]) -> dict[str, Any]:
    body = pod.body if isinstance(pod, PodPlan) else pod
    containers: list[dict[str, Any]] = body["spec"]["containers"]
    wanted = pdep.spec.serving.container_name
    if wanted is None:
        return containers[0]
    (ctr,) = [c for c in containers if c["name"] == wanted]
    return ctr


def args_of(pdep: ParallelDeployment, pod: PodPlan) -> list[str]:
    return list(serving_container(pdep, pod).get("args") or [])


def env_of(ctr: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's env by name; a duplicated name is an error (Kubernetes keeps the last)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in ctr.get("env") or []:
        assert entry["name"] not in out, f"env {entry['name']} set twice"
        out[entry["name"]] = entry
    return out


def env_value(ctr: dict[str, Any], name: str) -> str | None:
    entry = env_of(ctr).get(name)
    return None if entry is None else entry.get("value")


def flag_values(args: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` (``--f v`` or ``--f=v``)."""
    out = []
    for i, a in enumerate(args):
        if a == flag:
            assert i + 1 < len(args), f"{flag} has no value"
            out.append(args[i + 1])
        elif a.startswith(flag + "="):
            out.append(a[len(flag) + 1 :])
    return out


def flag_value(args: list[str], flag: str) -> str | None:
    values = flag_values(args, flag)
    assert len(values) <= 1, f"{flag} given {len(values)} times: {values}"
    return values[0] if values else None


def gpus(ctr: dict[str, Any]) -> tuple[int, int]:
    """(requests, limits) of nvidia.com/gpu."""
    res = ctr.get("resources") or {}
    return int(res["requests"]["nvidia.com/gpu"]), int(res["limits"]["nvidia.com/gpu"])


# --------------------------------------------------------------------------------------- strategy

_NAME_RE = r"[a-z]([-a-z0-9]{0,46}[a-z0-9])?"
_LABEL_RE = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_USER_ARGS = ("--trust-remote-code", "--max-model-len=8192", "--gpu-memory-utilization", "0.9")

names = st.one_of(
    st.from_regex(_NAME_RE, fullmatch=True),
    # The longest names the API admits (48), where the pod/Service suffixes are closest to 63.
    st.text("abz09-", min_size=46, max_size=46).map(lambda mid: f"a{mid}9"),
)
namespaces = st.one_of(st.none(), st.from_regex(_LABEL_RE, fullmatch=True))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def parallel_configs(draw: st.DrawFn, layout: str | None = None) -> dict[str, Any]:
    """A valid spec.parallelConfig for ``layout`` (drawn when None), DP up to 256, TP/PP up to 8."""
    lay = layout or draw(st.sampled_from(LAYOUT_NAMES))
    tp = draw(st.integers(1, 8))
    pp = draw(st.integers(1, 8))
    pc: dict[str, Any] = {"tensorParallelSize": tp, "pipelineParallelSize": pp}
    if lay == "external":
        dp = draw(st.integers(2, 256))
        pc |= {"dataParallelSize": dp, "dataParallelExternalLb": True}
        if draw(st.booleans()):
            pc["dataParallelSizeLocal"] = 1
    elif lay == "hybrid":
        local = draw(st.integers(2, 16))
        dp = local * draw(st.integers(2, 256 // local))
        pc |= {"dataParallelSize": dp, "dataParallelSizeLocal": local, "dataParallelHybridLb": True}
    elif lay == "internal":
        if draw(st.booleans()):
            local = draw(st.integers(1, 32))
            dp = local * draw(st.integers(2 if local == 1 else 1, 256 // local))
            pc |= {"dataParallelSize": dp, "dataParallelSizeLocal": local}
        else:  # vLLM's default: every rank in one pod
            dp = draw(st.integers(2, 256))
            pc["dataParallelSize"] = dp
    elif lay == "single":
        dp = 1
        local = draw(st.sampled_from([None, 1]))
        if local is not None:
            pc["dataParallelSizeLocal"] = local
    else:
        dp = draw(st.integers(1, min(256, 4096 // (tp * pp))))
        pc |= {"dataParallelSize": dp, "distributedExecutorBackend": "external_launcher"}
    if "dataParallelSize" not in pc and draw(st.booleans()):
        pc["dataParallelSize"] = 1

    ep = draw(st.booleans())
    if ep:
        pc["enableExpertParallel"] = True
    backend = draw(st.one_of(st.none(), st.sampled_from(ALL2ALL_BACKENDS)))
    if backend is not None:
        pc["all2allBackend"] = backend
    if ep and tp * dp > 1 and draw(st.booleans()):
        pc["enableEplb"] = True
        eplb = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "windowSize": st.integers(1, 10_000_000),
                    "stepInterval": st.integers(1, 10_000_000),
                    "numRedundantExperts": st.integers(0, 4096),
                    "logBalancedness": st.booleans(),
                },
            )
        )
        if eplb:
            pc["eplbConfig"] = eplb
        if draw(st.integers(0, 7)) == 0:  # the deprecated spelling, forwarded into eplbConfig
            pc["numRedundantExperts"] = draw(st.integers(0, 64))
    if backend in DEEPEP_BACKENDS and draw(st.booleans()):
        pc["enableDbo"] = True
        pc |= draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "dboDecodeTokenThreshold": st.integers(0, 1_000_000),
                    "dboPrefillTokenThreshold": st.integers(0, 1_000_000),
                },
            )
        )
    dcp = draw(st.sampled_from(_divisors(tp)))
    if dcp != 1 or draw(st.booleans()):
        pc["decodeContextParallelSize"] = dcp
    if draw(st.booleans()):
        pc["expertPlacementStrategy"] = draw(st.sampled_from(["linear", "round_robin"]))
    if draw(st.booleans()):
        pc["disableCustomAllReduce"] = draw(st.booleans())
    if lay != "torchrun":
        executors: list[str | None] = [None, "mp", "ray"] + (["uni"] if tp * pp == 1 else [])
        executor = draw(st.sampled_from(executors))
        if executor is not None:
            pc["distributedExecutorBackend"] = executor
        if dp == 1 and executor in (None, "ray") and draw(st.booleans()):
            pc["dataParallelBackend"] = "ray"
    return pc


def _distinct_ports(draw: st.DrawFn) -> list[int]:
    """Three distinct ports (drawn without a filter, so hypothesis never gives up on them)."""
    out: list[int] = []
    for n in range(3):
        port = draw(st.integers(1, 65535 - n))
        for taken in sorted(out):
            if port >= taken:
                port += 1
        out.append(port)
    return out


@st.composite
def valid_deployments(draw: st.DrawFn, layout: str | None = None) -> Obj:
    """A ParallelDeployment dict that ``validate_object`` accepts, over every layout and option."""
    name = draw(names)
    pc = draw(parallel_configs(layout))
    spec: dict[str, Any] = {}
    version = draw(st.sampled_from([None, "0.11.0", "0.11.1"]))
    if version is not None:
        spec["vllmVersion"] = version
    serving: dict[str, Any] = {}
    if draw(st.booleans()):
        rpc, master, http = _distinct_ports(draw)
        pc |= {"dataParallelRpcPort": rpc, "dataParallelMasterPort": master}
        serving["port"] = http
    if draw(st.booleans()):
        serving["apiServerCount"] = draw(st.integers(1, 256))
    if serving:
        spec["serving"] = serving
    if draw(st.booleans()):
        spec["preflight"] = {"enabled": True}
    if draw(st.booleans()):
        spec["startup"] = {"timeoutSeconds": draw(st.integers(60, 86_400))}
    if draw(st.booleans()):
        spec["network"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "socketInterface": st.sampled_from(["eth0", "ib0", "net1"]),
                    "shmSizeLimit": st.sampled_from(["2Gi", "16Gi"]),
                    "clusterDomain": st.sampled_from(["cluster.local", "k8s.example.org"]),
                },
            )
        )
    args = [MODEL, *draw(st.lists(st.sampled_from(_USER_ARGS[:2]), max_size=2, unique=True))]
    ctr: dict[str, Any] = {"name": "vllm", "image": "vllm/vllm-openai:v0.11.1", "args": args}
    if pc.get("distributedExecutorBackend") == "external_launcher":
        ctr["command"] = ["python3", "/scripts/offline.py"]
    labels = {"app": name} if draw(st.booleans()) else None
    obj = parallel_deployment(
        name,
        namespace=draw(namespaces),
        parallel_config=pc,
        containers=[ctr],
        labels=labels,
        **spec,
    )
    if draw(st.booleans()):
        obj["metadata"]["uid"] = "6f1c0a3e-0000-4000-8000-" + draw(
            st.from_regex(r"[0-9a-f]{12}", fullmatch=True)
        )
    return obj
