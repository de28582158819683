"""How long ``wideep render`` takes for a wide deployment, against the floor of producing that many pods.

    PYTHONPATH=operator:. python -m bench.render_bench [--dp 256 1024] [--reps 5] [--profile]

The deployment is ``examples/deepseek-v3-wide-ep.yaml`` (external LB, one pod per DP rank, EPLB, DBO,
DeepEP) with ``dataParallelSize`` set to each ``--dp``. Every stage is timed with ``time.perf_counter``
over ``--reps`` repetitions in this process (the median is reported, the best in brackets):

* ``baseline``  ``json.loads(json.dumps(pods))`` of as many naively built pod dicts (a literal copy of the
  planned pod 0 with its name changed): the floor of producing that many objects in Python;
* ``validate``  ``validate_object`` (pydantic + the cross-field rules), as ``wideep render`` does first;
* ``plan``      ``plan()``, the pure planner: every Service and Pod of the group;
* ``yaml``      ``yaml.safe_dump`` of the ``List``, exactly as ``wideep render -o yaml`` writes it;
* ``render``    ``wideep render -f FILE -o yaml`` end to end (``cli.main``, stdout captured);
* ``render-json`` the same with ``-o json``;
* ``libyaml``   the same YAML with PyYAML's C emitter (``CSafeDumper``), for comparison.

Ratios are against ``baseline`` for the same DP. Target (issue 4): rendering DP=1024 in under 0.5 s.
``render_case`` is the one render figure of ``make bench`` (``render`` against ``baseline`` at N = 1024).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.builders import parallel_deployment
from wideep import cli
from wideep.api.validate import validate_object
from wideep.planning.planner import plan

from .controller_bench.objects import pdep_doc, planned_objects

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "deepseek-v3-wide-ep.yaml"
TARGET_S = 0.5


def deployment(dp: int) -> dict[str, Any]:
    return parallel_deployment(f"wide-dp{dp}", example=EXAMPLE.name, parallel_config={"dataParallelSize": dp})


def naive_pods(template: dict[str, Any], n: int) -> list[dict[str, Any]]:
    name = template["metadata"]["name"].rsplit("-", 1)[0]
    return [{**template, "metadata": {**template["metadata"], "name": f"{name}-{i}"}} for i in range(n)]


Row = tuple[str, float, float, float, Any]
"""stage, median wall s, best wall s, median CPU s (process_time), note or result."""


def timed(stage: str, fn: Callable[[], Any], reps: int) -> Row:
    """Wall (perf_counter) and CPU (process_time) seconds of ``reps`` calls; the last result as the note."""
    wall, cpu = [], []
    result = None
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return stage, statistics.median(wall), min(wall), statistics.median(cpu), result


def cli_render(path: Path, output: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["render", "-f", str(path), "-o", output])
    if rc != 0:
        raise RuntimeError(f"wideep render failed with {rc}")
    return buf.getvalue()


def bench(dp: int, reps: int, tmp: Path) -> list[Row]:
    doc = deployment(dp)
    path = tmp / f"dp{dp}.yaml"
    path.write_text(yaml.safe_dump(doc))

    verdict = validate_object(copy.deepcopy(doc))
    assert verdict.ok and verdict.obj is not None, verdict.errors
    group = plan(verdict.obj)
    pods = [p.body for p in group.pods]
    assert len(pods) == dp
    naive = naive_pods(pods[0], len(pods))
    listing = {"apiVersion": "v1", "kind": "List", "items": group.objects()}

    rows: list[Row] = []
    stage, med, best, cpu, _ = timed("baseline", lambda: json.loads(json.dumps(naive)), reps)
    rows.append((stage, med, best, cpu, f"json round trip of {len(naive)} naive pod dicts"))
    stage, med, best, cpu, _ = timed("validate", lambda: validate_object(copy.deepcopy(doc)), reps)
    rows.append((stage, med, best, cpu, "validate_object"))
    stage, med, best, cpu, g = timed("plan", lambda: plan(verdict.obj), reps)  # type: ignore[arg-type]
    rows.append((stage, med, best, cpu, f"plan(): {len(g.pods)} pods + {len(g.services)} Services"))
    stage, med, best, cpu, text = timed(
        "yaml", lambda: yaml.safe_dump(listing, sort_keys=False, width=4096), reps
    )
    rows.append((stage, med, best, cpu, f"yaml.safe_dump of the List, {len(text) / 1e6:.1f} MB"))
    stage, med, best, cpu, rendered = timed("render", lambda: cli_render(path, "yaml"), reps)
    assert yaml.load(rendered, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) == listing, (
        "wideep render's YAML differs from the planned List"
    )
    rows.append((stage, med, best, cpu, "wideep render -f FILE -o yaml, end to end"))
    stage, med, best, cpu, _ = timed("render-json", lambda: cli_render(path, "json"), reps)
    rows.append((stage, med, best, cpu, "wideep render -f FILE -o json, end to end"))
    dumper = getattr(yaml, "CSafeDumper", None)
    if dumper is not None:
        stage, med, best, cpu, ctext = timed(
            "libyaml", lambda: yaml.dump(listing, Dumper=dumper, sort_keys=False, width=4096), reps
        )
        same = "identical to" if ctext == text else "DIFFERENT from"
        rows.append((stage, med, best, cpu, f"yaml.CSafeDumper: output {same} wideep render's"))
    return rows


def render_case(reps: int, n: int = 1024) -> dict[str, Any]:
    """``make bench``'s figure: ``wideep render -f FILE -o yaml`` of the bench's spec at N = 1024 through
    ``wideep.cli.main`` (the CLI's code path), stdout captured; baseline: a JSON round trip of as many copies
    of the planned pod 0 (the floor of producing that many objects in Python). Median wall and CPU time of
    ``reps`` runs."""
    doc = pdep_doc("render", "default", n)
    naive = naive_pods(planned_objects(doc, "uid")[0], n)

    def stage(fn: Callable[[], Any]) -> dict[str, float]:
        _, median, best, cpu, _ = timed("", fn, reps)
        return {"median_s": median, "best_s": best, "cpu_s": cpu}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pdep.yaml"
        path.write_text(yaml.safe_dump(doc))
        stages = {
            "render": stage(lambda: cli_render(path, "yaml")),
            "baseline": stage(lambda: json.loads(json.dumps(naive))),
        }
    return {"n": n, "reps": reps, "stages": stages}


def profile_plan(dp: int) -> None:
    verdict = validate_object(deployment(dp))
    assert verdict.obj is not None
    prof = cProfile.Profile()
    prof.enable()
    plan(verdict.obj)
    prof.disable()
    pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dp", type=int, nargs="+", default=[256, 1024], help="DP sizes (default 256 1024)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per stage (default 5)")
    parser.add_argument("--profile", action="store_true", help="cProfile plan() for the largest DP")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    print(f"wideep render benchmark: {EXAMPLE.name} with dataParallelSize = {args.dp}, {args.reps} reps")
    print(f"{'DP':>5} {'stage':<12} {'median ms':>10} {'best ms':>9} {'cpu ms':>8} {'x baseline':>11}  what")
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for dp in args.dp:
            rows = bench(dp, args.reps, Path(tmp))
            base = rows[0][1]
            for stage, med, best, cpu, note in rows:
                print(
                    f"{dp:>5} {stage:<12} {med * 1e3:>10.1f} {best * 1e3:>9.1f} {cpu * 1e3:>8.1f}"
                    f" {med / base:>11.2f}  {note}"
                )
            by = {r[0]: r[1] for r in rows}
            if dp == 1024:
                for stage in ("plan", "render", "render-json"):
                    ok = "under" if by[stage] < TARGET_S else "OVER"
                    verdicts.append(
                        f"DP=1024 {stage}: {by[stage] * 1e3:.0f} ms median, {ok} the {TARGET_S * 1e3:.0f} ms target"
                    )
    for line in verdicts:
        print(line)
    if args.profile:
        profile_plan(max(args.dp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
