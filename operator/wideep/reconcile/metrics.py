"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
