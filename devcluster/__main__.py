"""``python -m devcluster up|down|status|env|demo``: the local control plane from the command line.

up      start etcd, kube-apiserver, controller-manager, scheduler, kwok and fake GPU nodes in the
        background (they outlive this command) and print how to point kubectl at them
down    stop every process recorded in <state dir>/pids.json
status  say whether the recorded processes run and the API server answers
env     print ``export KUBECONFIG=...`` for a running cluster (``eval "$(python -m devcluster env)"``)
demo    the main job: cluster (started if needed) + CRD + operator + the DeepSeek-style example to Ready
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from . import build
from .cluster import (
    COMPONENTS,
    EXIT_LABEL,
    ClusterError,
    LocalCluster,
    default_state_dir,
    find_controlplane,
    is_running,
    read_pids,
    rss_bytes,
)

NODE_COLUMNS = (
    "NAME:.metadata.name,"
    "GPUS:.status.capacity.nvidia\\.com/gpu,"
    "CPU:.status.capacity.cpu,"
    "MEMORY:.status.capacity.memory,"
    'READY:.status.conditions[?(@.type=="Ready")].status'
)


def controlplane() -> Path:
    found = find_controlplane()
    return found if found is not None else build.ensure_built()


def print_nodes(cluster: LocalCluster) -> None:
    out = cluster.kubectl("get", "nodes", "-o", f"custom-columns={NODE_COLUMNS}")
    print(out.stdout.rstrip() or out.stderr.rstrip())


def export_lines(cluster: LocalCluster) -> str:
    return f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}"


DEMO_NAMESPACE = "demo"
DEMO_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "deepseek-v3-wide-ep.yaml"
FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io=true"


def _operator_pidfile(cluster: LocalCluster) -> Path:
    return cluster.state_dir / "operator.pid"


def stop_operator(state_dir: Path) -> None:
    pidfile = state_dir / "operator.pid"
    if not pidfile.exists():
        return
    with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}/cmdline").exists() else b""
        if b"wideep" in cmdline:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
    pidfile.unlink(missing_ok=True)


def start_operator(cluster: LocalCluster) -> subprocess.Popen[bytes]:
    """`wideep run --all-namespaces` in the background (it outlives this command); log next to the cluster's."""
    stop_operator(cluster.state_dir)
    log = (cluster.logs_dir / "operator.log").open("ab")
    env = {**os.environ, **cluster.env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "operator")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wideep",
            "run",
            "--all-namespaces",
            "--log-format",
            "plain",
            "--liveness-port",
            "0",
            "--metrics-port",
            "0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    _operator_pidfile(cluster).write_text(str(proc.pid))
    return proc


def _kubectl_ok(cluster: LocalCluster, *args: str, stdin: str | None = None) -> str:
    out = cluster.kubectl(*args, input=stdin) if stdin is not None else cluster.kubectl(*args)
    if out.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return str(out.stdout)


def _pdep(cluster: LocalCluster, name: str) -> dict[str, Any]:
    path = f"/apis/wideep.dev/v1alpha1/namespaces/{DEMO_NAMESPACE}/paralleldeployments/{name}"
    status, body = cluster.request("GET", path)
    return body if status == 200 else {}


def _ready(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    if st.get("observedGeneration") != (obj.get("metadata") or {}).get("generation"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


def run_demo(cluster: LocalCluster, try_failure: bool = False) -> int:
    """Install the CRD, run the operator, apply the DeepSeek-style example and wait until it is Ready."""
    from wideep.api.generate import crd_yaml, warnings_yaml

    t0 = time.monotonic()
    print(f"control plane ready ({cluster.server}); fake GPU nodes:")
    print_nodes(cluster)
    _kubectl_ok(
        cluster,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=crd_yaml() + "---\n" + warnings_yaml(),
    )
    _kubectl_ok(
        cluster, "wait", "--for=condition=Established", "--timeout=60s", "crd/paralleldeployments.wideep.dev"
    )
    print("\nCRD paralleldeployments.wideep.dev installed")
    proc = start_operator(cluster)
    print(f"operator running (pid {proc.pid}, log {cluster.logs_dir / 'operator.log'})")
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}},
    )
    doc = yaml.safe_load(DEMO_EXAMPLE.read_text())
    name = doc["metadata"]["name"]
    _kubectl_ok(cluster, "apply", "-n", DEMO_NAMESPACE, "-f", str(DEMO_EXAMPLE))
    print(
        f"applied {DEMO_EXAMPLE.name} (DP=16, expert parallel, DeepEP low-latency, EPLB with 32 redundant experts)"
    )
    applied = time.monotonic()
    cluster.wait_for(f"{name} Ready", lambda: _ready(_pdep(cluster, name)), timeout=180, interval=0.2)
    print(f"\n{name} Ready {time.monotonic() - applied:.1f}s after apply\n")
    print(_kubectl_ok(cluster, "get", "pdep", "-n", DEMO_NAMESPACE, "-o", "wide").rstrip())
    print()
    cols = (
        "POD:.metadata.name,DP-RANK:.metadata.labels.wideep\\.dev/dp-rank,NODE:.spec.nodeName,"
        "STATUS:.status.phase,GPUS:.spec.containers[0].resources.limits.nvidia\\.com/gpu"
    )
    print(
        _kubectl_ok(
            cluster,
            "get",
            "pods",
            "-n",
            DEMO_NAMESPACE,
            "-l",
            f"wideep.dev/deployment={name}",
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            f"custom-columns={cols}",
        ).rstrip()
    )
    if try_failure:
        before = _pdep(cluster, name)["status"].get("groupRestarts", 0)
        _kubectl_ok(cluster, "label", "pod", "-n", DEMO_NAMESPACE, f"{name}-3", FAIL_LABEL)
        print("\nrank 3 failed on purpose; waiting for the gang restart")
        cluster.wait_for(
            "gang restart",
            lambda: (
                (_pdep(cluster, name).get("status") or {}).get("groupRestarts", 0) > before
                and _ready(_pdep(cluster, name))
            ),
            timeout=120,
        )
        print(
            _kubectl_ok(
                cluster,
                "get",
                "events",
                "-n",
                DEMO_NAMESPACE,
                "--field-selector",
                f"involvedObject.name={name}",
                "-o",
                "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
            ).rstrip()
        )
    kc = shlex.quote(str(cluster.kubeconfig))
    print(
        f"""
Everything keeps running. Try a failure and watch the whole group restart as a gang:

  export KUBECONFIG={kc}
  kubectl get pdep,pods -n {DEMO_NAMESPACE} -w &
  kubectl label pod -n {DEMO_NAMESPACE} {name}-3 {FAIL_LABEL}
  kubectl label pod -n {DEMO_NAMESPACE} {name}-5 {EXIT_LABEL}=true     # a rank that exits 0, as vLLM does
  kubectl get events -n {DEMO_NAMESPACE} --field-selector involvedObject.name={name}
  kubectl get pdep -n {DEMO_NAMESPACE} {name} -o jsonpath='{{.status.ranks[3].lastFailure}}'
  kubectl scale pdep -n {DEMO_NAMESPACE} {name} --replicas 8      # new DP size, full re-roll

Stop everything with `make cluster-down`. (demo took {time.monotonic() - t0:.1f}s)"""
    )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if is_running(state_dir):
        cluster = LocalCluster.attach(state_dir)
        print(f"already running (state dir {state_dir})")
    else:
        cluster = LocalCluster(
            state_dir,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            controlplane_dir=controlplane(),
            verbose=args.verbose,
        )
        cluster.start()
        print(f"control plane ready in {cluster.startup_seconds or 0:.1f}s; logs in {cluster.logs_dir}")
    print(f"kubeconfig: {cluster.kubeconfig}")
    print(export_lines(cluster))
    print_nodes(cluster)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if read_pids(state_dir) is None:
        stop_operator(state_dir)
        print(f"nothing recorded in {state_dir}/pids.json")
        return 0
    stop_operator(state_dir)
    LocalCluster(state_dir).stop()
    print(f"stopped the operator and the control plane recorded in {state_dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    data = read_pids(state_dir)
    if data is None:
        print(f"not running (no {state_dir}/pids.json)")
        return 1
    running = is_running(state_dir)
    total = 0
    for rec in data.get("processes", []):
        rss = rss_bytes(int(rec["pid"]))
        total += rss
        state = f"pid {rec['pid']:>7}  rss {rss / 2**20:6.0f} MiB" if rss else "not running"
        print(f"  {rec['name']:<24} {state}")
    print(f"  {'total':<24} {'':>11}  rss {total / 2**20:6.0f} MiB")
    if not running:
        missing = set(COMPONENTS) - {r["name"] for r in data.get("processes", [])}
        print("degraded" + (f": never started {', '.join(sorted(missing))}" if missing else ""))
        return 1
    cluster = LocalCluster.attach(state_dir)
    status, _ = cluster.request("GET", "/readyz")
    print(f"{cluster.server}/readyz: HTTP {status}")
    print(export_lines(cluster))
    return 0 if status == 200 else 1


def cmd_env(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if not is_running(state_dir):
        print(f"# no running cluster in {state_dir}: run `make cluster-up`", file=sys.stderr)
        return 1
    print(export_lines(LocalCluster.attach(state_dir)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if is_running(state_dir):
        cluster = LocalCluster.attach(state_dir)
    else:
        cluster = LocalCluster(
            state_dir,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            controlplane_dir=controlplane(),
            verbose=args.verbose,
        )
        cluster.start()
    try:
        return run_demo(cluster, try_failure=args.try_failure)
    finally:
        if args.stop:
            stop_operator(state_dir)
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env", "demo"])
    parser.add_argument("--state-dir", type=Path, default=None, help="default: $WIDEEP_STATE_DIR/cluster")
    parser.add_argument("--nodes", type=int, default=None, help="fake GPU nodes (env WIDEEP_FAKE_NODES, 4)")
    parser.add_argument(
        "--gpus-per-node",
        type=int,
        default=None,
        help="nvidia.com/gpu per node (env WIDEEP_GPUS_PER_NODE, 8)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print start-up progress")
    parser.add_argument(
        "--try-failure", action="store_true", help="demo: fail rank 3 and wait for the gang restart"
    )
    parser.add_argument(
        "--stop", action="store_true", help="demo: stop the operator and the cluster at the end"
    )
    args = parser.parse_args(argv)
    args.state_dir_given = args.state_dir is not None
    if args.state_dir is None:
        args.state_dir = default_state_dir()
    handlers = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env, "demo": cmd_demo}
    try:
        return handlers[args.command](args)
    except (ClusterError, build.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
