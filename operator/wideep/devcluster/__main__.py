"""``python -m wideep.devcluster up|down|status|env|demo``: the local control plane from the command line.

up      start etcd, kube-apiserver, controller-manager, scheduler, kwok and fake GPU nodes in the
        background (they outlive this command) and print how to point kubectl at them
down    stop every process recorded in <state dir>/pids.json
status  say whether the recorded processes run and the API server answers
env     print ``export KUBECONFIG=...`` for a running cluster (``eval "$(python -m wideep.devcluster env)"``)
demo    start a throw-away cluster, run the demo on it, stop it
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import build
from .cluster import (
    COMPONENTS,
    ClusterError,
    LocalCluster,
    default_state_dir,
    find_controlplane,
    is_running,
    read_pids,
    rss_bytes,
    state_root,
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


def run_demo(cluster: LocalCluster) -> int:
    """The demo, run on a started cluster. Extend here: install the operator, apply the example, wait."""
    print(f"control plane ready in {cluster.startup_seconds or 0:.1f}s ({cluster.server})")
    print_nodes(cluster)
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
        print(f"nothing recorded in {state_dir}/pids.json")
        return 0
    LocalCluster(state_dir).stop()
    print(f"stopped the control plane recorded in {state_dir}")
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
    state_dir = args.state_dir if args.state_dir_given else state_root() / "demo-cluster"
    cluster = LocalCluster(
        state_dir,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        controlplane_dir=controlplane(),
        verbose=args.verbose,
    )
    with cluster:
        return run_demo(cluster)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wideep.devcluster", description=__doc__)
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
