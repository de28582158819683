"""The operator on a real local control plane, measured against the API server's own floor.

The pieces ``bench.run`` (``make bench``) is made of, by concern:

``common``    constants (the bench identities, the ParallelDeployment API, 64 calls in flight), ``log``
``objects``   the bench's ParallelDeployment (``pdep_doc``) and exactly what the operator creates for it
``cluster``   ``make_cluster``: LocalCluster plus two extra identities (``wideep-bench-operator`` for the
              operator, ``wideep-bench-baseline`` for the baseline client and the user who applies objects)
              and an API-server audit log of every request they make: the write counts are read from the
              API server, not from the operator; ``Api``, the bench's own client; namespaces, waiting for a
              quiet cluster, cleanup
``measure``   what is measured and how: the audit log, CPU time per process, RSS, metric deltas, cProfile
              summaries, the machine
``observer``  a separate process (``python -m bench.controller_bench observe``) that lists and watches one
              namespace and prints the moments (CLOCK_MONOTONIC, shared by every process on the machine)
              when milestones are reached: all pods and Services exist, all pods Ready, the
              ParallelDeployment Ready. Measuring from outside both contenders keeps the observer's CPU out
              of either one's process.
``operator``  ``OperatorProc``: ``python -m wideep run`` as a subprocess with its own token, metrics and RSS;
              optionally under cProfile
``cases``     ``operator_case``: apply → created → Ready, write counts (audit and metrics), a no-op resync,
              gang recovery; ``memory_case``: RSS after 100 ParallelDeployments x 16 ranks
"""
