"""Prometheus metrics of the operator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wideep.api.constants import COND_READY
from wideep.api.models import Condition

# (status, reason) of each condition type of one group, as last exported.
_Conditions = dict[str, tuple[str, str]]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconcile_duration = Histogram(
            "wideep_reconcile_duration_seconds",
            "Duration of one reconcile pass of a ParallelDeployment",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "wideep_reconcile_errors_total",
            "Reconcile passes that failed and were retried",
            registry=self.registry,
        )
        self.group_restarts = Counter(
            "wideep_group_restarts_total",
            "Gang restarts of a ParallelDeployment's group",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.ranks_ready = Gauge(
            "wideep_ranks_ready", "DP ranks whose pod is Ready", ["namespace", "name"], registry=self.registry
        )
        self.ranks_total = Gauge(
            "wideep_ranks_total", "DP ranks in the group", ["namespace", "name"], registry=self.registry
        )
        self.time_to_ready = Histogram(
            "wideep_time_to_ready_seconds",
            "Time from the creation of a group generation to all its ranks Ready",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600),
            registry=self.registry,
        )
        self.api_connections = Counter(
            "wideep_api_connections_opened",
            "Connections opened to the Kubernetes API (each one a TLS handshake); steady once warm",
            registry=self.registry,
        )
        self.api_writes = Counter(
            "wideep_api_writes_total", "Write calls to the Kubernetes API", ["kind"], registry=self.registry
        )
        self.group_ready = Gauge(
            "wideep_group_ready",
            "1 when the group's Ready condition is True, else 0",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.group_condition = Gauge(
            "wideep_group_condition",
            "1 for the current status and reason of each condition type of a group; one series per type",
            ["namespace", "name", "type", "status", "reason"],
            registry=self.registry,
        )
        self._conditions: dict[tuple[str, str], _Conditions] = {}

    def set_group_conditions(self, namespace: str, name: str, conditions: Iterable[Condition]) -> None:
        """Export a group's conditions (wideep_group_condition, wideep_group_ready). Only a change costs
        anything. A condition whose status or reason changed gets its new series before its old one is
        removed, so a scrape in between sees no gap (alerts keep their `for`), and no stale series remain."""
        key = (namespace, name)
        now: _Conditions = {c.type: (c.status, c.reason) for c in conditions}
        before = self._conditions.get(key)
        if now == before:
            return
        before = before or {}
        self._conditions[key] = now
        for type_, (status, reason) in now.items():
            if before.get(type_) != (status, reason):
                self.group_condition.labels(namespace, name, type_, status, reason).set(1)
        for type_, (status, reason) in before.items():
            if now.get(type_) != (status, reason):
                _remove(self.group_condition, namespace, name, type_, status, reason)
        ready = now.get(COND_READY)
        self.group_ready.labels(namespace, name).set(1 if ready is not None and ready[0] == "True" else 0)

    def forget_group(self, namespace: str, name: str) -> None:
        """Remove every series of a group that is gone, so that no alert fires for it."""
        for type_, (status, reason) in self._conditions.pop((namespace, name), {}).items():
            _remove(self.group_condition, namespace, name, type_, status, reason)
        for gauge in (self.group_ready, self.ranks_ready, self.ranks_total):
            _remove(gauge, namespace, name)
        _remove(self.group_restarts, namespace, name)


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # older prometheus-client raise when the series is not there
        metric.remove(*labels)
