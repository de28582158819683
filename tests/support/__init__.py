"""What the tests (and the benchmarks) share; test modules import from here, never from one another.

``builders``     ParallelDeployment manifests as plain dicts: ``parallel_deployment`` (the one builder), its
                 layout presets, ``pdep`` (a small group that runs on the cluster), examples, dotted-path edits
``waits``        ``wait_until``: poll a predicate, fail the test with the last value
``apiserver``    one kept-alive HTTPS connection to the API server, dry-run POSTs of ParallelDeployments
``crd``          ``install_crd``: the CRD and the deprecation-warning policy, applied and waited for until in force
``cluster``      namespaces, tainted pools of fake GPU nodes, ports, ``kubectl auth can-i``
``kube``         ``Kube`` (test-side API access), ``Watcher`` (records a collection's watch events)
``operator``     ``Operator``: ``wideep run`` as a subprocess; ``operator_log_clean``
``chart``        ``helm`` and ``render`` of charts/wideep-operator
``rule_cases``   the table of the API's verdicts (pydantic, the CRD's CEL and the API server hold to it)
``strategies``   hypothesis strategies of ParallelDeployments near the rules' boundaries
``reliability``  figures, convergence checks and operator bookkeeping of the reliability suite
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
