"""Monitoring the chart ships (its Grafana dashboard and PrometheusRule) checked against what the operator
exports: the metric names of wideep.reconcile.metrics.Metrics, PromQL metric names, Grafana expressions as
plain PromQL, series for ``promtool test rules`` scraped from a real Metrics, and ``promtool`` itself (built
from its Go module by tools/go-tool.sh, tools/go-tools.txt)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.tools import go_tool
from wideep.reconcile.metrics import Metrics

# Series a client library family of each type exposes (OpenMetrics' _created included).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def exported_names(registry: CollectorRegistry | None = None) -> set[str]:
    """Every series name the operator's /metrics can carry (labelled families included before first use)."""
    reg = registry if registry is not None else Metrics().registry
    names: set[str] = set()
    for family in reg.collect():
        names.update(family.name + s for s in _SUFFIXES[family.type])
    return names


# --------------------------------------------------------------------------------------------- PromQL

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and durations left out).
    Selecting by ``__name__`` is refused: its names could not be checked."""
    assert "__name__" not in expr, f"select metrics by name, not by __name__: {expr}"
    bare = _RANGE.sub(" ", _MATCHERS.sub(" ", _STRING.sub('""', expr)))
    bare = _GROUPING.sub(" ", bare)
    return {
        m.group(1) for m in _IDENT.finditer(bare) if not m.group(2) and m.group(1).lower() not in _KEYWORDS
    }


# --------------------------------------------------------------------------------------------- Grafana

_GRAFANA_INTERVAL = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}"
)
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL expression of every panel target."""
    return [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", []) if "expr" in t]


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Query variables: name -> query (label_values(...), as Grafana's Prometheus data source takes it)."""
    out = {}
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]
            out[v["name"]] = q["query"] if isinstance(q, dict) else q
    return out


def as_promql(expr: str) -> str:
    """A Grafana expression as plain PromQL: interval variables become 5m, template variables ``.*`` (they
    only appear inside regex matchers)."""
    out = _GRAFANA_VARIABLE.sub(".*", _GRAFANA_INTERVAL.sub("5m", expr))
    assert "$" not in out, f"a Grafana variable left in {expr!r}"
    return out


# --------------------------------------------------------------------------------------------- series


def scrape(metrics: Metrics) -> dict[str, float]:
    """/metrics of ``metrics`` now: series as promtool writes them (name{label="value", ...}) -> value."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            labels = ", ".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def input_series(
    metrics: Metrics, steps: int, at_step: Callable[[int], None], prefix: str = "wideep_group_"
) -> list[dict[str, str]]:
    """promtool input_series from ``steps`` scrapes of a real Metrics, ``at_step(i)`` changing it before
    scrape i. A series that disappears gets a staleness marker (as Prometheus writes one), then no samples."""
    scrapes = []
    for i in range(steps):
        at_step(i)
        scrapes.append({k: v for k, v in scrape(metrics).items() if k.startswith(prefix)})
    series: list[dict[str, str]] = []
    for name in sorted({k for s in scrapes for k in s}):
        values, seen = [], False
        for s in scrapes:
            if name in s:
                values.append(f"{s[name]:g}")
                seen = True
            else:
                values.append("stale" if seen else "_")
                seen = False
        series.append({"series": name, "values": " ".join(values)})
    return series


# --------------------------------------------------------------------------------------------- promtool


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(go_tool("promtool")), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=120,
    )
