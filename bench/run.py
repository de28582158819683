"""``make bench``: the operator against the API server's own floor, side by side on one control plane.

    PYTHONPATH=operator:. python -m bench.run            # N = 8, 64, 256, 1024; writes docs/benchmarks.{md,png}
    PYTHONPATH=operator:. python -m bench.run --quick    # N = 8, 64 only; writes bench/out/benchmarks-quick.*

One local control plane (etcd, kube-apiserver with an audit log, controller-manager, scheduler, kwok with
fake GPU nodes) is started for the whole run. For every N, in its own namespace each:

* baseline: a plain aiohttp client POSTs ``plan()``'s objects (64 in flight) → all exist → kwok made
  every pod Ready (``bench/baseline.py``);
* operator: ``wideep run`` watching only that namespace; POST the ParallelDeployment → all objects exist →
  ``Ready=True`` with ``observedGeneration`` current; its writes counted in the API server's audit log
  and in its own metrics; three no-op resyncs (``--resync-seconds 2``) must write nothing; for N = 64
  and 256 one rank is failed and the gang recovery is timed.

Then the operator's RSS after 100 ParallelDeployments x 16 ranks, and ``wideep render`` at N = 1024.
Raw results: ``bench/out/results*.json``; operator logs (and ``--profile`` cProfile dumps) in bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.crd import install_crd

from .baseline import baseline_case
from .controller_bench.cases import Bench, memory_case, operator_case
from .controller_bench.cluster import Api, make_cluster
from .controller_bench.common import BASELINE_USER, ROOT, log
from .controller_bench.measure import Audit, loadavg, machine
from .pairs import clean_pairs, default_pairs, median_run, others_share, ratios, select_pairs
from .render_bench import render_case
from .report import OUT, report, save

DOCS = ROOT / "docs"


# --------------------------------------------------------------------------------------- running


async def run_cluster_benches(cluster: Any, args: argparse.Namespace, results: dict[str, Any]) -> None:
    admin = Api(cluster.server, cluster.ca_path, cluster.token)
    user = Api(cluster.server, cluster.ca_path, cluster.user_tokens[BASELINE_USER])
    b = Bench(
        cluster=cluster,
        admin=admin,
        user=user,
        audit=Audit(cluster.audit_log),
        out_dir=OUT,
        resync_seconds=args.resync_seconds,
        profile=args.profile,
    )
    lws_ctl = None
    try:
        if args.lws:
            from . import lws as lws_mod

            why = lws_mod.available()
            if why is not None:
                log(f"no LeaderWorkerSet column: {why}")
                results["lws_missing"] = why
            else:
                home = lws_mod.ensure_built()
                lws_ctl = lws_mod.LwsController(cluster, home, OUT)
                await lws_ctl.install(
                    admin, [lws_mod.namespace(n, k) for n in args.sizes for k in range(lws_mod.RUNS_MAX)]
                )
                lws_ctl.start()
                results["lws_version"] = lws_mod.LWS_VERSION
                log(f"LeaderWorkerSet {lws_mod.LWS_VERSION} controller running")
        log("warm-up: baseline N=8 (not recorded)")
        await baseline_case(b, 8)
        for n in args.sizes:
            base_runs: list[dict[str, Any]] = []
            op_runs: list[dict[str, Any]] = []
            ssa_runs: list[dict[str, Any]] = []
            reps = args.reps or default_pairs(n)
            rep = 0
            while rep < reps or (
                n <= args.extra_reps_max_n
                and rep < reps + args.extra_reps
                and not clean_pairs(op_runs, base_runs, args.max_others)
            ):
                if rep >= reps:
                    log(
                        f"N={n}: other processes took more than {args.max_others:.0%} of the CPUs; one more pair"
                    )
                order = ("baseline", "operator") if rep % 2 == 0 else ("operator", "baseline")
                for who in order:
                    t = time.monotonic()
                    if who == "baseline":
                        r = await baseline_case(b, n)
                        base_runs.append(r)
                        log(
                            f"N={n} baseline: created {r['t']['created']:.2f}s, Ready {r['t']['pods_ready']:.2f}s "
                            f"(others {others_share(r):.0%} of the CPUs; run {time.monotonic() - t:.0f}s)"
                        )
                    else:
                        r = await operator_case(
                            b, n, recovery=n in args.recovery_sizes and rep == 0, noop=rep == 0
                        )
                        op_runs.append(r)
                        rec = r.get("recovery")
                        extra = f", recovery {rec['t']['pods_ready']:.2f}s" if rec else ""
                        log(
                            f"N={n} operator: created {r['t']['created']:.2f}s, Ready {r['t']['pd_ready']:.2f}s"
                            f"{extra} (others {others_share(r):.0%} of the CPUs; run {time.monotonic() - t:.0f}s)"
                        )
                if args.ssa_baseline and rep == 0:
                    r = await baseline_case(b, n, ssa=True)
                    ssa_runs.append(r)
                    log(f"N={n} baseline (server-side apply): created {r['t']['created']:.2f}s")
                rep += 1
            op_used, base_used = select_pairs(op_runs, base_runs, args.max_others)
            results["ratios"][str(n)] = ratios(op_used, base_used)
            results["ratios"][str(n)]["pairs_run"] = len(op_runs)
            results["ratios"][str(n)]["others_per_pair"] = [
                round(max(others_share(o), others_share(bb)), 3)
                for o, bb in zip(op_runs, base_runs, strict=True)
            ]
            results["baseline"][str(n)] = median_run(base_used)
            op = median_run(op_used)
            for once in ("recovery", "noop"):  # measured in the first repetition only
                if once not in op:
                    op[once] = next((r[once] for r in op_runs if once in r), None)
            results["operator"][str(n)] = op
            if ssa_runs:
                results["baseline_ssa"][str(n)] = median_run(ssa_runs)
            if lws_ctl is not None:
                lws_runs = []
                for k in range(max(1, min(reps, lws_mod.RUNS_MAX))):
                    t = time.monotonic()
                    r = await lws_mod.lws_case(b, lws_ctl, n, k)
                    lws_runs.append(r)
                    log(
                        f"N={n} LeaderWorkerSet: created {r['t']['created']:.2f}s, Ready {r['t']['pods_ready']:.2f}s "
                        f"(others {others_share(r):.0%} of the CPUs; run {time.monotonic() - t:.0f}s)"
                    )
                results.setdefault("lws", {})[str(n)] = median_run(lws_runs)
            save(results, args)
        if args.memory:
            log(f"memory: {args.memory_pdeps} ParallelDeployments x {args.memory_ranks} ranks")
            results["memory"] = await memory_case(b, args.memory_pdeps, args.memory_ranks)
            log(f"memory: RSS {results['memory']['rss_ready']['VmRSS'] / 2**20:.0f} MiB")
    finally:
        if lws_ctl is not None:
            lws_ctl.stop()
        await admin.close()
        await user.close()


# --------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="N = 8, 64 only; no memory run; writes bench/out/")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="rank counts (default 8 64 256 1024)")
    p.add_argument("--recovery-sizes", type=int, nargs="*", default=None, help="default 64 256")
    p.add_argument(
        "--reps",
        type=int,
        default=0,
        help="pairs of runs per N, medians reported (default: 31 at N=8, 15 up to 64, 9 up to 256, then 5)",
    )
    p.add_argument(
        "--max-others",
        type=float,
        default=0.15,
        help="a pair of runs counts as disturbed when other processes used more than this share of the CPUs",
    )
    p.add_argument(
        "--extra-reps", type=int, default=1, help="extra pairs per N when every pair was disturbed"
    )
    p.add_argument(
        "--extra-reps-max-n",
        type=int,
        default=256,
        help="no extra pairs above this N (a pair at 1024 takes minutes)",
    )
    p.add_argument("--nodes", type=int, default=32)
    p.add_argument("--gpus-per-node", type=int, default=64)
    p.add_argument("--resync-seconds", type=float, default=2.0)
    p.add_argument("--memory-pdeps", type=int, default=100)
    p.add_argument("--memory-ranks", type=int, default=16)
    p.add_argument("--no-memory", dest="memory", action="store_false", default=None)
    p.add_argument("--no-ssa-baseline", dest="ssa_baseline", action="store_false", default=True)
    p.add_argument(
        "--no-lws",
        dest="lws",
        action="store_false",
        default=True,
        help="no LeaderWorkerSet column (bench/lws.py)",
    )
    p.add_argument("--render-reps", type=int, default=5)
    p.add_argument(
        "--profile", action="store_true", help="run the operator under cProfile (bench/out/*.prof)"
    )
    p.add_argument("--output", type=Path, default=None, help="markdown path (default docs/benchmarks.md)")
    p.add_argument(
        "--from-results",
        type=Path,
        default=None,
        help="write the table, markdown and plot again from a saved results JSON (no runs)",
    )
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = [8, 64] if args.quick else [8, 64, 256, 1024]
    if args.recovery_sizes is None:
        args.recovery_sizes = [n for n in (64, 256) if n in args.sizes]
    if args.memory is None:
        args.memory = not args.quick
    if args.output is None:
        args.output = OUT / "benchmarks-quick.md" if args.quick else DOCS / "benchmarks.md"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.from_results is not None:
        report(json.loads(args.from_results.read_text()), args.output)
        return 0
    from devcluster.cluster import state_root

    gpus = args.nodes * args.gpus_per_node
    need = max(*args.sizes, args.memory_pdeps * args.memory_ranks if args.memory else 0)
    if gpus < need:
        raise SystemExit(f"{args.nodes} nodes x {args.gpus_per_node} GPUs = {gpus} < {need} needed")
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sizes": args.sizes,
        "resync_seconds": args.resync_seconds,
        "operator": {},
        "baseline": {},
        "baseline_ssa": {},
        "ratios": {},
        "reps": args.reps or "31 at N=8, 15 up to 64, 9 up to 256, 5 above",
        "max_others": args.max_others,
        "raw_name": "results-quick.json" if args.quick else "results.json",
        "title": "",
    }
    results["machine"] = machine()
    OUT.mkdir(parents=True, exist_ok=True)
    # First, on a quiet machine (a user's `wideep render` has no control plane beside it): after the cluster
    # runs, its processes' exit and leftovers skewed it (0.52 s once, 0.25 s alone).
    log("render: wideep render at N=1024")
    results["render"] = render_case(args.render_reps)
    state = state_root() / "bench-cluster"
    cluster = make_cluster(state, args.nodes, args.gpus_per_node)
    log(f"starting the control plane: {args.nodes} nodes x {args.gpus_per_node} GPUs (state: {state})")
    cluster.start()
    try:
        results["cluster"] = {
            "nodes": args.nodes,
            "gpus_per_node": args.gpus_per_node,
            "startup_s": cluster.startup_seconds,
            "rss_after_bench_bytes": None,
        }
        log(f"control plane up in {cluster.startup_seconds:.1f}s; load average {loadavg():.1f}")
        install_crd(cluster)
        asyncio.run(run_cluster_benches(cluster, args, results))
        results["cluster"]["rss_after_bench_bytes"] = cluster.rss_bytes()
    except BaseException:
        shutil.copytree(cluster.logs_dir, OUT / "cluster-logs", dirs_exist_ok=True)
        log(f"failed; control-plane logs copied to {OUT / 'cluster-logs'}")
        raise
    finally:
        cluster.stop()
    results["wall_s"] = time.monotonic() - started
    m = results["machine"]
    results["title"] = (
        f"{m['nproc']} CPUs, {m['memory_gib']} GiB; Kubernetes {m['kubernetes']}, kwok {m['kwok']}; {results['date']}"
    )
    save(results, args)
    report(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
