"""The report of a run: the summary table (printed), and the markdown page with its plot (``docs/benchmarks.md``
for a full run), written from the results alone, so ``--from-results`` writes them again without running."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .controller_bench.common import ROOT, log
from .pairs import default_pairs

TARGET_RATIO = 1.3
TARGET_RSS_MB = 200
TARGET_RENDER_S = 0.5
OUT = ROOT / "bench" / "out"


def planned_total(run: dict[str, Any]) -> int:
    """Pods plus Services the run's plan has."""
    return sum(run["planned"].values())


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _fmt(v: Any, unit: str = "s") -> str:
    if v is None:
        return "-"
    if isinstance(v, int) or unit == "":
        return f"{v}"
    if unit == "s":
        return f"{v:.2f} s" if v >= 0.1 else f"{v * 1e3:.0f} ms"
    if unit == "MiB":
        return f"{v:.0f} MiB"
    return f"{v:.2f} {unit}"


def _ok(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**MISSED**")


def creates_of(writes: dict[str, int], prefixes: tuple[str, ...] = ("patch ", "create ")) -> int:
    """Pod and Service writes: the operator POSTs new pods and server-side applies (PATCH) the rest."""
    wanted = {f"{p}{r}" for p in prefixes for r in ("pods", "services")}
    return sum(v for k, v in writes.items() if k in wanted)


Row = tuple[str, str, str, str, str, str, str]


def row(
    figure: str, operator: str, baseline: str, ratio: str, target: str, verdict: str, lws: str = "-"
) -> Row:
    """A summary row: (figure, operator, baseline, LeaderWorkerSet, ratio operator/baseline, target, verdict)."""
    return (figure, operator, baseline, lws, ratio, target, verdict)


def _lws(lws: dict[str, Any], n: int, key: str) -> str:
    run = lws.get(str(n))
    return _fmt(run["t"].get(key)) if run else "-"


def table_rows(results: dict[str, Any]) -> list[Row]:
    """(figure, operator, baseline, LeaderWorkerSet, ratio operator/baseline, target, verdict)."""
    rows: list[Row] = []
    op, base, lws = results["operator"], results["baseline"], results.get("lws") or {}
    for n in results["sizes"]:
        o, bb = op[str(n)], base[str(n)]
        r = results["ratios"][str(n)]["created"]
        rows.append(
            row(
                f"N={n}: apply → {planned_total(o)} objects created",
                _fmt(o["t"]["created"]),
                _fmt(bb["t"]["created"]),
                f"{r:.2f}" if r else "-",
                f"≤ {TARGET_RATIO}",
                _ok(r is not None and r <= TARGET_RATIO),
                lws=_lws(lws, n, "created"),
            )
        )
        r = results["ratios"][str(n)].get("written")
        if r is not None:
            rows.append(
                row(
                    f"N={n}: apply → last create answered (API server's audit log)",
                    _fmt(o["t"].get("last_write")),
                    _fmt(bb["t"].get("last_write")),
                    f"{r:.2f}",
                    f"≤ {TARGET_RATIO}",
                    _ok(r <= TARGET_RATIO),
                )
            )
        r = results["ratios"][str(n)]["ready"]
        rows.append(
            row(
                f"N={n}: apply → Ready",
                _fmt(o["t"]["pd_ready"]),
                _fmt(bb["t"]["pods_ready"]),
                f"{r:.2f}" if r else "-",
                f"≤ {TARGET_RATIO}",
                _ok(r is not None and r <= TARGET_RATIO),
                lws=_lws(lws, n, "pods_ready"),
            )
        )
    for n in results["sizes"]:
        o = op[str(n)]
        planned = planned_total(o)
        audited = creates_of(o["writes_audit"])
        metric = sum(
            o["writes_metrics"].get(k, 0)
            for k in ("create/Pod", "apply/Pod", "create/Service", "apply/Service")
        )
        rows.append(
            row(
                f"N={n}: pod+Service writes to create (audit / metrics)",
                f"{audited} / {metric}",
                f"{planned} planned",
                f"{audited / planned:.2f}",
                "= planned",
                _ok(audited == planned and metric == planned),
            )
        )
    for n in results["sizes"]:
        noop = op[str(n)]["noop"]
        audited = sum(noop["writes_audit"].values())
        metric = sum(noop["writes_metrics"].values())
        rows.append(
            row(
                f"N={n}: writes in {noop['reconciles']} no-op resyncs (audit / metrics)",
                f"{audited} / {metric}",
                "0",
                "-",
                "0",
                _ok(audited == 0 and metric == 0),
            )
        )
    for n in results["sizes"]:
        rec = op[str(n)].get("recovery")
        if not rec:
            continue
        o = op[str(n)]
        r = _ratio(rec["t"]["pods_ready"], o["t"]["pods_ready"])
        rows.append(
            row(
                f"N={n}: gang recovery, rank Failed → all {n} pods new and Ready (vs create → pods Ready)",
                _fmt(rec["t"]["pods_ready"]),
                _fmt(o["t"]["pods_ready"]),
                f"{r:.2f}" if r else "-",
                "(reported)",
                "-",
            )
        )
    mem = results.get("memory")
    if mem:
        rss = mem["rss_ready"]["VmRSS"] / 2**20
        rows.append(
            row(
                f"operator RSS, {mem['pdeps']} ParallelDeployments x {mem['ranks']} ranks ({mem['pods']} pods)",
                _fmt(rss, "MiB"),
                f"idle {_fmt(mem['rss_idle']['VmRSS'] / 2**20, 'MiB')}",
                "-",
                f"< {TARGET_RSS_MB} MB",
                _ok(rss * 2**20 < TARGET_RSS_MB * 1e6),
            )
        )
    big = max(results["sizes"])
    o = op[str(big)]
    rows.append(
        row(
            f"operator RSS, N={big} ranks Ready (peak)",
            f"{_fmt(o['rss_ready']['VmRSS'] / 2**20, 'MiB')} ({_fmt(o['rss_ready']['VmHWM'] / 2**20, 'MiB')})",
            f"idle {_fmt(o['rss_idle']['VmRSS'] / 2**20, 'MiB')}",
            "-",
            "(reported)",
            "-",
        )
    )
    rb = results.get("render")
    if rb:
        st = rb["stages"]
        r = _ratio(st["render"]["median_s"], st["baseline"]["median_s"])
        rows.append(
            row(
                "`wideep render -o yaml`, N=1024 (baseline: JSON round trip of 1024 pod dicts)",
                f"{_fmt(st['render']['median_s'])} (CPU {_fmt(st['render']['cpu_s'])})",
                _fmt(st["baseline"]["median_s"]),
                f"{r:.1f}" if r else "-",
                f"< {TARGET_RENDER_S} s",
                _ok(st["render"]["median_s"] < TARGET_RENDER_S),
            )
        )
    return rows


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    head = ("figure", "operator", "baseline", "LeaderWorkerSet", "ratio", "target", "")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def md_table(head: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _writes(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items())) or "none"


def details(results: dict[str, Any]) -> str:
    op, base, ssa = results["operator"], results["baseline"], results.get("baseline_ssa") or {}

    def win(r: dict[str, Any] | None, k: str, which: str = "write_window") -> str:
        w = (r or {}).get(which) or {}
        return _fmt(w.get(k))

    orows, brows = [], []
    for n in results["sizes"]:
        o, bb = op[str(n)], base[str(n)]
        s = ssa.get(str(n))
        reps = f" ({len(o['all_runs_t'])} runs)" if "all_runs_t" in o else ""
        orows.append(
            (
                f"{n}{reps}",
                _fmt(o["t"].get("pd_received")),
                _fmt(o["t"].get("first_write")),
                _fmt(o["t"].get("last_write")),
                _fmt(o["t"].get("first_pod")),
                _fmt(o["t"]["created"]),
                win(o, "last", "bind_window"),
                win(o, "last", "kwok_window"),
                _fmt(o["t"]["pods_ready"]),
                _fmt(o["t"]["pd_ready"]),
                f"{o['reconciles']} / {_fmt(o['reconcile_s'])}",
                _fmt(o["operator_cpu_s"]),
            )
        )
        brows.append(
            (
                f"{n}{reps}",
                _fmt(bb["t"].get("pd_received")),
                _fmt(bb["t"].get("first_write")),
                _fmt(bb["t"].get("last_write")),
                _fmt(bb["t"]["created"]),
                win(bb, "last", "bind_window"),
                win(bb, "last", "kwok_window"),
                _fmt(bb["t"]["pods_ready"]),
                win(s, "last") if s else "-",
                _fmt(s["t"]["created"]) if s else "-",
            )
        )
    timing = md_table(
        (
            "N",
            "ParallelDeployment received",
            "first write received",
            "last write answered",
            "first pod seen",
            "all created",
            "last pod bound",
            "last kwok status write",
            "all pods Ready",
            "Ready=True",
            "reconciles / time in them",
            "operator CPU to Ready",
        ),
        orows,
    )
    timing += "\n\nBaseline (API-server audit log for the write window):\n\n" + md_table(
        (
            "N",
            "ParallelDeployment received",
            "first write received",
            "last write answered",
            "all created",
            "last pod bound",
            "last kwok status write",
            "all pods Ready",
            "SSA variant: last write answered",
            "SSA variant: all created",
        ),
        brows,
    )
    wrows = []
    for n in results["sizes"]:
        o = op[str(n)]
        wrows.append(
            (
                n,
                planned_total(o),
                _writes(o["writes_audit"]),
                _writes(o["writes_metrics"]),
                _writes(o["reads_audit"]),
                f"{o['noop']['reconciles']} reconciles: {_writes(o['noop']['requests_audit'])}",
            )
        )
    writes = md_table(
        (
            "N",
            "planned objects",
            "operator writes, audit log (create → Ready)",
            "operator writes, its metrics",
            "operator reads, audit log",
            "no-op resyncs: every request, audit log",
        ),
        wrows,
    )
    rrows = []
    for n in results["sizes"]:
        rec = op[str(n)].get("recovery")
        if rec:
            t = rec["t"]
            rrows.append(
                (
                    n,
                    _fmt(rec["t_from_label"]["failed"]),
                    _fmt(t["old_gone"]),
                    _fmt(t.get("first_pod")),
                    _fmt(t["created"]),
                    _fmt(t["pods_ready"]),
                    _fmt(t["pd_ready"]),
                    f"{rec['deletes'].get('count', 0)} in {_fmt(rec['deletes'].get('first'))} to {_fmt(rec['deletes'].get('last'))}",
                    f"{rec['creates'].get('count', 0)} in {_fmt(rec['creates'].get('first'))} to {_fmt(rec['creates'].get('last'))}",
                    rec["status_writes"].get("count", 0),
                    _writes(rec["writes_audit"]),
                )
            )
    recovery = (
        md_table(
            (
                "N",
                "label → pod Failed",
                "Failed → old pods gone",
                "→ first new pod",
                "→ all new created",
                "→ all new Ready",
                "→ Ready=True",
                "pod deletes (audit window)",
                "pod creates (audit window)",
                "status writes",
                "operator writes (audit)",
            ),
            rrows,
        )
        if rrows
        else "(not run)"
    )
    procs = (
        "kube-apiserver",
        "etcd",
        "operator",
        "kube-scheduler",
        "kwok",
        "kube-controller-manager",
        "bench",
        "observer",
    )
    crows = []
    for n in results["sizes"]:
        for who, src, key in (
            ("operator", op, "cpu_created"),
            ("baseline", base, "cpu_created"),
            ("baseline SSA", ssa, "cpu_created"),
        ):
            if str(n) not in src:
                continue
            cpu = src[str(n)].get(key)
            if cpu:
                t = src[str(n)]["t"]["created"]
                crows.append(
                    (
                        n,
                        who,
                        _fmt(t),
                        *(_fmt(cpu.get(p)) if p in cpu else "-" for p in procs),
                        _fmt(sum(v for k, v in cpu.items() if k != "others")),
                        _fmt(cpu.get("others")),
                    )
                )
    prow = []
    for n in results["sizes"]:
        rt = results["ratios"][str(n)]
        prow.append(
            (
                n,
                rt.get("pairs_run", "-"),
                ", ".join(f"{x:.0%}" for x in rt.get("others_per_pair", [])),
                ", ".join(f"{x:.2f}" for x in rt.get("created_per_rep", [])),
                ", ".join(f"{x:.2f}" for x in rt.get("ready_per_rep", [])),
            )
        )
    pairs_table = md_table(
        (
            "N",
            "pairs run",
            "CPU share of other processes, per pair",
            "created ratio of the pairs used",
            "Ready ratio of the pairs used",
        ),
        prow,
    )
    cpu_table = md_table(
        ("N", "run", "t0 → all created", *procs, "bench cluster total", "other processes on the machine"),
        crows,
    )
    return f"### Pairs of runs\n\n{pairs_table}\n\n### Timings (seconds from the POST of the ParallelDeployment)\n\n{timing}\n\n### CPU seconds per process from t0 to all objects created ({results['machine']['nproc']} CPUs)\n\n{cpu_table}\n\n### Write and read calls\n\n{writes}\n\n### Gang recovery (seconds from the moment the failed pod is seen Failed)\n\n{recovery}\n"


def breakdown(results: dict[str, Any]) -> str:
    """Where the operator's extra time goes, per N, from the same run's numbers."""
    op, base, ssa = results["operator"], results["baseline"], results.get("baseline_ssa") or {}
    rows = []
    for n in results["sizes"]:
        o, bb, sv = op[str(n)], base[str(n)], ssa.get(str(n)) or {}
        ow, bw, sw = o.get("write_window") or {}, bb.get("write_window") or {}, sv.get("write_window") or {}

        def span(w: dict[str, Any]) -> float | None:
            return w["last"] - w["first"] if "last" in w else None

        def api(r: dict[str, Any]) -> float | None:
            return (r.get("cpu_created") or {}).get("kube-apiserver")

        react = ow["first"] - bw["first"] if "first" in ow and "first" in bw else None
        status = (o.get("writes_audit") or {}).get("patch paralleldeployments/status", 0)
        ssa_cost = _ratio(api(sv), api(bb))
        rows.append(
            (
                n,
                _fmt(react),
                f"{_fmt(span(ow))} / {_fmt(span(bw))} / {_fmt(span(sw))}",
                f"{_fmt(api(o))} / {_fmt(api(bb))} / {_fmt(api(sv))}",
                f"{ssa_cost:.2f}" if ssa_cost else "-",
                _fmt((o.get("cpu_created") or {}).get("operator")),
                status,
                o.get("connections_opened", "-"),
                _fmt(
                    sum((o.get("cpu_created") or {}).values()) - (o.get("cpu_created") or {}).get("others", 0)
                ),
                _fmt(
                    sum((bb.get("cpu_created") or {}).values())
                    - (bb.get("cpu_created") or {}).get("others", 0)
                ),
            )
        )
    table = md_table(
        (
            "N",
            "reaction: operator's first write minus baseline's",
            "write window: operator / POST / SSA",
            "kube-apiserver CPU to created: operator / POST / SSA",
            "SSA / POST API-server CPU",
            "operator CPU to created",
            "status writes to Ready",
            "connections opened by the operator (apply → Ready)",
            "bench-cluster CPU to created: operator run",
            "baseline run",
        ),
        rows,
    )
    return (
        "## Where the time goes\n\n"
        "The machine's CPUs are shared by every component, so CPU spent anywhere is wall time for the "
        "run: the operator's own CPU (its watches of every pod and Service it creates, the plan, each "
        "decision), its events, and the status writes made while the "
        "group comes up (at 1024 ranks one status write costs the API server about 0.24 s of CPU whatever the "
        "verb, so progress-only status writes are at most one per 2 s, a new group's first status waits until "
        "the group is Ready or 2 s have passed, pod events that only move progress figures (bound, Running, "
        "Ready while the group comes up) are taken in by one pass per 2 s instead of a pass each, and passes "
        "of a large group are paced by their own CPU cost). The longer a run's write window, the more of the scheduler's binding and "
        "kwok's status writes (which run at their own pace in both runs) fall inside it, so a gap in CPU "
        "grows in wall time. The operator's own client costs about what the baseline's does per create (0.38 "
        "against 0.36 ms of CPU to POST a pod and take in the answer); what the baseline does not do is watch: "
        "each pod watch event costs the operator 0.16 ms of CPU, against 0.12 ms for a bare aiohttp watch that "
        "only decodes it (`bench/results/client_cost.md`), and at N=1024 at least 1024 of them (each create's "
        "echo) "
        "fall in the write window. The reaction is the delay from the user's POST to the operator's first write "
        "(watch event, validation, plan, decision); both clients start with as many open connections as "
        "requests in flight (the operator keeps them open with `--warm-connections`: before it did, the "
        "reaction at N=64 to 1024 was 83-170 ms, mostly TLS handshakes, ~1 ms of client CPU each). Pods and "
        "Services are created with POST like the baseline's; server-side apply, which cost the API server "
        "1.4-2.3x the CPU of POST for the same objects (the SSA variant below), is left for later changes. "
        "Write windows are first request received to last "
        "response sent, from the audit log. Ready takes the operator one write more than the baseline: once "
        "the last pod is Ready it writes the group's status, and the observer sees that. On every status "
        "write the API server validates the whole ParallelDeployment, spec and its CEL rules included, and "
        "server-side applies it. For 8 ranks that is 8.9 ms of API-server CPU, 2.4 ms of it the CEL rules, "
        "against 1.1 ms for a ConfigMap patch (`bench/results/write_cost.md`); at N=8 it is most of the "
        "Ready gap.\n\n"
        f"{table}\n"
    )


def write_markdown(
    results: dict[str, Any], rows: Sequence[tuple[str, ...]], path: Path, png: Path | None
) -> None:
    m = results["machine"]
    pk = m["packages"]
    load = [x for n in results["sizes"] for x in results["operator"][str(n)]["loadavg"]]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench.run`); do not edit by hand. The operator is measured against the",
        "API server's own floor, on the same local control plane and in the same run, so machine noise largely",
        "cancels in the ratio.",
        "",
        f"- Date: {results['date']}; commit `{m['commit']}`; wall time of the run {results['wall_s'] / 60:.1f} min",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, Linux {m['kernel']}; "
        f"everything (etcd, kube-apiserver, controller-manager, scheduler, kwok, operator, baseline, observer) on these CPUs; "
        f"1-minute load average during the operator runs {min(load):.1f} to {max(load):.1f}",
        f"- Versions: wideep {m['wideep']}, Python {m['python']}, kopf {pk['kopf']}, aiohttp {pk['aiohttp']}, "
        f"pydantic {pk['pydantic']}; Kubernetes {m['kubernetes']}, etcd {m['etcd']}, kwok {m['kwok']}",
        f"- Cluster: {results['cluster']['nodes']} fake nodes x {results['cluster']['gpus_per_node']} `nvidia.com/gpu` "
        f"(kwok), default component flags (kube-scheduler 50 QPS, controller-manager 20 QPS), an audit log of the "
        f"bench identities; start-up {results['cluster']['startup_s']:.0f} s",
        (
            f"- LeaderWorkerSet {results['lws_version']} (built from Go modules, `bench/lws.py`): one replica of size N "
            "(a leader and N-1 workers, each the operator's rank-0 pod spec) on the same API server, webhooks on "
            "127.0.0.1; its pods come from kube-controller-manager's StatefulSet controller at its default 20 QPS; "
            "its 'created' is N pods and its one headless Service, up to 3 runs per N (medians)"
            if results.get("lws_version")
            else f"- LeaderWorkerSet: not measured ({results.get('lws_missing', 'skipped with --no-lws')})"
        ),
        f"- Spec: `examples/deepseek-v3-wide-ep.yaml` with `dataParallelSize = N` (external LB, 1 GPU per pod: N pods and "
        f"3 Services, one of them headless); operator `wideep run --namespace bench-op-N --resync-seconds "
        f"{results['resync_seconds']:g}` (64 API calls in flight, 16 workers)",
        "",
        "## Summary",
        "",
        md_table(
            ("figure", "operator", "baseline", "LeaderWorkerSet", "ratio operator / baseline", "target", ""),
            rows,
        ),
        "",
    ]
    if png is not None:
        lines += [f"![time against N]({png.name})", ""]
    lines += [
        breakdown(results),
        "## Details",
        "",
        details(results),
        "## Method",
        "",
        "- **Clock.** An observer process (`python -m bench.controller_bench observe`) lists and watches the",
        "  namespace's pods, Services and ParallelDeployments and stamps each event with `CLOCK_MONOTONIC` on",
        "  receipt; t = 0 is just before the POST of the ParallelDeployment. It runs outside both the operator",
        "  and the baseline, so neither pays for it alone.",
        "- **Created**: the observer has seen all N pods and the 3 Services. **Ready**: operator: the",
        "  ParallelDeployment's `Ready` condition is `True` with `status.observedGeneration` equal to",
        "  `metadata.generation`; baseline: all N pods `Ready` (kwok's `pod-ready` stage after the scheduler has",
        "  bound them).",
        "- **Baseline** (`bench/baseline.py`): the same process as the bench, the same API server; the objects are",
        "  `plan()` of the same spec, owned by a real ParallelDeployment that the client POSTs first (no operator",
        "  watches that namespace), serialised before t = 0; one aiohttp session, 64 requests in flight, plain",
        "  `POST` creates (the API server's cheapest write). `base SSA` is a diagnostic variant of the same client",
        "  creating everything with server-side apply (`PATCH application/apply-patch+yaml`, the operator's verb for",
        "  Services and for every change after creation), to show what that verb costs the API server.",
        "- **Write counts** come from the kube-apiserver audit log: the operator runs under its own token",
        "  (`wideep-bench-operator`), the baseline and the user's POSTs under another; the operator's",
        "  `wideep_api_writes_total` metric is shown next to them. Server-side apply is the verb `patch`; the operator",
        "  creates pods with `POST` (verb `create`) and server-side applies Services and every later change.",
        "- **No-op resync** (first repetition): once Ready, three resync periods pass with nothing changing; every request the",
        "  operator makes in that window is listed.",
        "- **Gang recovery** (N = 64, 256): the pod of rank N/2 gets kwok's",
        "  `pod-container-running-failed.stage.kwok.x-k8s.io=true` label (zero delay); timed from the moment the",
        "  observer sees it `Failed` until all N pods are new (other uids) and Ready; compared with the same",
        "  operator's create → all pods Ready at that N.",
        "- **Between runs** every namespace is emptied by the bench (pods with `gracePeriodSeconds=0`, Services,",
        "  EndpointSlices, Endpoints, ParallelDeployments) and the next run waits until the cluster is quiet: two",
        "  consecutive 2 s windows with at most 12 API requests/s and at most 0.1 CPU s per window in each of",
        "  controller-manager, scheduler and kwok (the controller-manager works through a deleted run for tens",
        "  of seconds at its 20 QPS). A warm-up baseline N=8 run is not recorded.",
        "- **Pairs and disturbance.** Each N runs baseline and operator as a pair "
        f"({default_pairs(8)} pairs at N=8, {default_pairs(64)} up to N=64, {default_pairs(256)} up to N=256, "
        f"{default_pairs(1024)} above, alternating",
        "  which goes first). The machine is shared: the bench samples `/proc/stat` and counts the",
        "  CPU used by processes outside the bench cluster; a pair in which they took more than "
        f"{results.get('max_others', 0.15):.0%} of the",
        "  CPUs (t0 to Ready) is *disturbed*, and when every pair of an N up to 256 is disturbed one more pair is run. The",
        "  ratios are the median of the per-pair ratios over the undisturbed pairs (else the least disturbed",
        "  pair); the table below lists every pair.",
        "- **Created (audit)**: the same moment read from the API server's audit log (the last create or apply",
        "  answered), immune to the watch-delivery lag of the observer.",
        "- **Memory**: `VmRSS` from `/proc/<pid>/status` of the operator (default `--resync-seconds 60`) after all",
        "  ParallelDeployments are Ready; peak is `VmHWM`.",
        "- **render**: `wideep render -f FILE -o yaml` through `wideep.cli.main` in-process, median of "
        f"{(results.get('render') or {}).get('reps', '-')} runs (`bench/render_bench.py`).",
        "- **LeaderWorkerSet** (the third column): see the first lines of this page for the version and how it"
        " runs; `--no-lws` leaves it out.",
        "",
        f"Raw numbers: `bench/out/{results['raw_name']}` (git-ignored), written by the same run.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def save(results: dict[str, Any], args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / results["raw_name"]).write_text(json.dumps(results, indent=1, default=str) + "\n")


def report(results: dict[str, Any], output: Path) -> None:
    """Print the table and write the markdown and the plot of one run's results."""
    rows = table_rows(results)
    print()
    print_table(rows)
    png: Path | None = output.with_suffix(".png")
    try:
        from .plot import plot

        plot(results, output.with_suffix(".png"))
    except ImportError as exc:
        log(f"no plot: {exc} (matplotlib is in the dev extras)")
        png = None
    write_markdown(results, rows, output, png)
    print(f"\nwrote {output}" + (f" and {png}" if png else "") + f" in {results['wall_s'] / 60:.1f} min")
