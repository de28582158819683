"""The chart's monitoring, off by default: a Grafana dashboard (a ConfigMap for Grafana's dashboard sidecar)
and a PrometheusRule. Checked with promtool (built from Prometheus' Go module, tools/go-tools.txt): every
dashboard and alert expression parses and reads only metrics the operator exports, and ``promtool test
rules`` proves each alert fires, and stays quiet while groups are healthy, on series scraped from the
operator's own Metrics driven by decide() (tests/support/world.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, helm, render
from tests.support.monitoring import (
    as_promql,
    dashboard_panels,
    dashboard_queries,
    exported_names,
    input_series,
    promql_metric_names,
    promtool,
    variable_queries,
)
from tests.support.world import World, make_pdep, make_unschedulable
from wideep.reconcile.metrics import Metrics

ON = ["grafana.dashboard.enabled=true", "prometheusRule.enabled=true"]
FOR = {"restartBudgetExhausted": "2m", "groupNotReady": "20m", "insufficientCapacity": "10m"}
TUNED = [
    *ON,
    *(f"prometheusRule.alerts.{alert}.for={d}" for alert, d in FOR.items()),
    "prometheusRule.ruleLabels.team=inference",
]
ALERTS = {
    "restartBudgetExhausted": "WideepRestartBudgetExhausted",
    "groupNotReady": "WideepGroupNotReady",
    "insufficientCapacity": "WideepInsufficientCapacity",
}


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def dashboard_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    data = only(docs, "ConfigMap")["data"]
    assert list(data) == ["wideep-operator.json"]
    return dict(json.loads(data["wideep-operator.json"]))


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in only(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def check_rules(tmp_path: Path, groups: list[dict[str, Any]]) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    out = promtool("check", "rules", path)
    assert out.returncode == 0, f"promtool check rules:\n{out.stdout}\n{out.stderr}"
    return out.stdout


# --------------------------------------------------------------------------------------------- defaults


def test_both_are_off_by_default() -> None:
    kinds = {d["kind"] for d in render()}
    assert "PrometheusRule" not in kinds
    assert "ConfigMap" not in kinds


def test_lint_with_both_on() -> None:
    args = ["lint", "--strict", str(CHART)]
    for s in TUNED:
        args += ["--set", s]
    assert "1 chart(s) linted, 0 chart(s) failed" in helm(*args).stdout


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["prometheusRule.alerts.groupNotReady.for=soon"], "at '/prometheusRule/alerts/groupNotReady/for'"),
        (["prometheusRule.alerts.nope.enabled=true"], "at '/prometheusRule/alerts'"),
        (["grafana.dashboard.label=bad label"], "at '/grafana/dashboard/label'"),
        (["grafana.dashboard.namespace=Not_A_Namespace"], "at '/grafana/dashboard/namespace'"),
        (
            [
                "prometheusRule.enabled=true",
                *(f"prometheusRule.alerts.{a}.enabled=false" for a in ALERTS),
            ],
            "prometheusRule.enabled needs at least one of prometheusRule.alerts.*.enabled",
        ),
    ],
)
def test_bad_monitoring_values_are_refused(sets: list[str], message: str) -> None:
    args = ["template", "w", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------- dashboard


def test_dashboard_configmap_carries_the_sidecar_label() -> None:
    cm = only(render(*ON), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "wideep-system"
    assert "annotations" not in cm["metadata"]
    cm = only(
        render(
            *ON,
            "grafana.dashboard.label=dashboards",
            "grafana.dashboard.labelValue=wideep",
            "grafana.dashboard.namespace=monitoring",
            "grafana.dashboard.labels.team=inference",
            "grafana.dashboard.annotations.grafana_folder=wideep",
        ),
        "ConfigMap",
    )
    labels = cm["metadata"]["labels"]
    assert labels["dashboards"] == "wideep" and labels["team"] == "inference"
    assert "grafana_dashboard" not in labels
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "wideep"}


def test_dashboard_is_valid_grafana_json() -> None:
    dash = dashboard_of(render(*ON))
    assert dash["uid"] == "wideep-operator" and dash["title"]
    panels = list(dashboard_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert "datasource" in variables
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 10
    for p in graphs:
        assert p["targets"], f"panel {p['title']!r} has no query"
        assert p["gridPos"]["w"] <= 24
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    used = {
        m.group(1) or m.group(2)
        for q in [*dashboard_queries(dash), *variable_queries(dash).values()]
        for m in re.finditer(r"\$\{(\w+)\}|\$(\w+)", q)
        if not (m.group(1) or m.group(2)).startswith("__")
    }
    assert used <= variables, f"undefined variables: {used - variables}"


def test_dashboard_queries_parse_and_read_only_exported_metrics(tmp_path: Path) -> None:
    dash = dashboard_of(render(*ON))
    queries = dashboard_queries(dash)
    exported = exported_names()
    read: set[str] = set()
    for q in queries:
        names = promql_metric_names(as_promql(q))
        assert names, f"reads no metric: {q}"
        assert names <= exported, f"{q} reads {names - exported}, which the operator does not export"
        read |= names
    for name, q in variable_queries(dash).items():
        m = re.fullmatch(r"label_values\((.*), *(\w+)\)", q)
        assert m, f"variable {name}: {q}"
        assert promql_metric_names(as_promql(m.group(1))) <= exported, q
    # Every expression parses: promtool checks them as recording rules.
    check_rules(
        tmp_path,
        [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"wideep:dashboard:{i}", "expr": as_promql(q)} for i, q in enumerate(queries)
                ],
            }
        ],
    )
    # And the dashboard shows every metric the operator has.
    families = {f.name for f in Metrics().registry.collect()}
    shown = {f for f in families if any(n == f or n.startswith(f + "_") for n in read)}
    assert shown == families, f"metrics not on the dashboard: {families - shown}"


def test_promql_names_helper() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y", z=~"b.*"}[5m]))) / on(x) group_left(y) '
        'b offset 5m and count without (c) (c_total) > bool 1e3 or label_replace(d, "e", "$1", "f", "(.*)")'
    ) == {"a_bucket", "b", "c_total", "d"}
    assert "wideep_api_connections_opened_total" in exported_names()
    assert "wideep_reconcile_duration_seconds_bucket" in exported_names()
    assert "wideep_group_condition" in exported_names()


# --------------------------------------------------------------------------------------------- rule


def test_prometheus_rule_object_and_knobs() -> None:
    docs = render(*TUNED, "prometheusRule.labels.release=prom", "prometheusRule.namespace=monitoring")
    rule = only(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["metadata"]["namespace"] == "monitoring"
    rules = {r["alert"]: r for r in rules_of(docs)}
    assert set(rules) == set(ALERTS.values())
    for key, alert in ALERTS.items():
        assert rules[alert]["for"] == FOR[key]
        assert rules[alert]["labels"]["team"] == "inference"
        assert {"summary", "description"} <= set(rules[alert]["annotations"])
    default = {r["alert"]: r for r in rules_of(render(*ON))}
    assert default["WideepGroupNotReady"]["for"] == "15m"
    assert default["WideepRestartBudgetExhausted"]["labels"] == {"severity": "critical"}
    fewer = rules_of(render(*ON, "prometheusRule.alerts.insufficientCapacity.enabled=false"))
    assert [r["alert"] for r in fewer] == ["WideepRestartBudgetExhausted", "WideepGroupNotReady"]


def test_promtool_checks_the_rules_and_they_read_only_exported_metrics(tmp_path: Path) -> None:
    groups = only(render(*TUNED), "PrometheusRule")["spec"]["groups"]
    out = check_rules(tmp_path, groups)
    assert f"{len(ALERTS)} rules found" in out, out
    exported = exported_names()
    for r in rules_of(render(*TUNED)):
        names = promql_metric_names(r["expr"])
        assert names and names <= exported, f"{r['alert']} reads {names - exported}"


# --------------------------------------------------------------------------------------------- promtool test rules

Step = Callable[[World], None]


def _fail(pod: str) -> Step:
    return lambda w: w.fail(pod)


def _run_all(w: World) -> None:
    w.run_all()


def _unschedulable(w: World) -> None:
    make_unschedulable(w.pods["g-3"])


def _scheduled(w: World) -> None:
    w.pods["g-3"]["status"] = {"phase": "Pending"}


def _restart_three_times(start: int) -> dict[int, Step]:
    """Ready at start+1; two failures that restart the group (restartPolicy maxRestarts 2), each Ready again
    two minutes later; the third, at start+9, exhausts the budget."""
    return {
        start: _run_all,
        start + 3: _fail("g-0"),
        start + 5: _run_all,
        start + 6: _fail("g-1"),
        start + 8: _run_all,
        start + 9: _fail("g-3"),
    }


DELETE = "delete"


def scenario_series(minutes: int, groups: Mapping[str, Mapping[int, Step | str]]) -> list[dict[str, str]]:
    """Series of ``minutes`` scrapes of one operator reconciling ``groups`` (name in namespace llm -> script:
    minute -> what happens before that minute's pass; DELETE: the group is deleted)."""
    metrics = Metrics()
    worlds = {name: World(make_pdep(4, backoffSeconds=0)) for name in groups}
    deleted: set[str] = set()

    def at(minute: int) -> None:
        for name, script in groups.items():
            action = script.get(minute)
            if action == DELETE:
                deleted.add(name)
                metrics.forget_group("llm", name)
            if name in deleted:
                continue
            if callable(action):
                action(worlds[name])
            d = worlds[name].step()
            metrics.set_group_conditions("llm", name, d.state.conditions)

    return input_series(metrics, minutes, at)


def expected(rules: dict[str, dict[str, Any]], alert: str, *names: str) -> dict[str, Any]:
    """An alert_rule_test entry: ``alert`` firing for exactly these groups, labels and annotations as the
    rule templates them."""

    def one(name: str) -> dict[str, Any]:
        labels = {"namespace": "llm", "name": name}
        r = rules[alert]

        def fill(text: str) -> str:
            return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], text)

        return {
            "exp_labels": {**labels, **r["labels"]},
            "exp_annotations": {k: fill(v) for k, v in r["annotations"].items()},
        }

    return {"alertname": alert, "exp_alerts": [one(n) for n in names]}


def test_alerts_fire_when_they_should_and_not_while_healthy(tmp_path: Path) -> None:
    docs = render(*TUNED)
    rules = {r["alert"]: r for r in rules_of(docs)}
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": only(docs, "PrometheusRule")["spec"]["groups"]}, sort_keys=False)
    )
    budget, not_ready, capacity = ALERTS.values()

    def at(minute: int, alert: str, *names: str) -> dict[str, Any]:
        return {"eval_time": f"{minute}m", **expected(rules, alert, *names)}

    tests = [
        {
            # A group Ready throughout, and two that take 10 and 19 minutes (just below groupNotReady's
            # 20m) to come up: nothing ever fires.
            "name": "healthy",
            "interval": "1m",
            "input_series": scenario_series(
                61, {"steady": {1: _run_all}, "slow": {10: _run_all}, "late": {19: _run_all}}
            ),
            "alert_rule_test": [
                *(at(m, a) for m in (5, 19, 29, 45, 60) for a in (budget, capacity)),
                *(at(m, not_ready) for m in (5, 19, 29, 45, 60)),
            ],
        },
        {
            # "bad" restarts twice and exhausts its budget at minute 10 (not Ready since then, and for two
            # minutes from 4 and from 7 while restarting); "ok" stays Ready.
            "name": "restart budget exhausted",
            "interval": "1m",
            "input_series": scenario_series(45, {"bad": _restart_three_times(1), "ok": {1: _run_all}}),
            "alert_rule_test": [
                at(9, budget),
                at(11, budget),  # pending: for 2m
                at(12, budget, "bad"),
                at(44, budget, "bad"),
                at(29, not_ready),  # not Ready since minute 10: for 20m
                at(30, not_ready, "bad"),
                at(44, not_ready, "bad"),
                at(44, capacity),
            ],
        },
        {
            # Rank g-3 unschedulable from minute 3 to 29, then scheduled; "flapping" is not Ready from the
            # start, its Ready reason switching between InsufficientCapacity and WaitingForRanks every 3
            # minutes: not Ready fires on time all the same, insufficient capacity never lasts its 10m.
            "name": "insufficient capacity",
            "interval": "1m",
            "input_series": scenario_series(
                45,
                {
                    "short": {1: _run_all, 3: _unschedulable, 30: _run_all},
                    "flapping": {m: _unschedulable if (m // 3) % 2 else _scheduled for m in range(3, 45, 3)},
                },
            ),
            "alert_rule_test": [
                at(12, capacity),  # since minute 3: for 10m
                at(13, capacity, "short"),
                at(29, capacity, "short"),
                at(31, capacity),  # scheduled at minute 30: resolved
                at(44, capacity),
                at(19, not_ready),
                at(20, not_ready, "flapping"),
                at(23, not_ready, "flapping", "short"),
                at(31, not_ready, "flapping"),
                at(44, not_ready, "flapping"),
            ],
        },
        {
            # A group deleted while its alerts fire: its series go, and so do the alerts.
            "name": "deleted group",
            "interval": "1m",
            "input_series": scenario_series(40, {"gone": {**_restart_three_times(1), 35: DELETE}}),
            "alert_rule_test": [
                at(34, budget, "gone"),
                at(34, not_ready, "gone"),
                at(36, budget),
                at(36, not_ready),
            ],
        },
    ]
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump(
            {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False
        )
    )
    out = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert out.returncode == 0, f"promtool test rules:\n{out.stdout}\n{out.stderr}"
    assert "SUCCESS" in out.stdout + out.stderr, out.stdout + out.stderr
