"""The operator's run-time defaults, stated once: `wideep run`'s flags, the handlers, the reconciler and the
runtime take them from here (the chart leaves them unset unless a value is given)."""

from __future__ import annotations

RESYNC_SECONDS = 60.0
"""Level-based resync period of every ParallelDeployment."""
STATUS_PROGRESS_SECONDS = 2.0
"""Progress figures of a group coming up are written at most this often (reconcile/writes.py)."""
WORKERS = 16
"""ParallelDeployments reconciled at once."""
CONCURRENCY = 64
"""API calls in flight at once."""
LEASE_SECONDS = 15.0
"""Leader election: a leader that stops renewing is replaced after this."""
LIVENESS_PORT = 8080
METRICS_PORT = 9090
