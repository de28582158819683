"""``wideep preflight``: prove that every rank can join its data-parallel group before vLLM starts.

It runs in each rank pod (an init container the planner adds when ``spec.preflight.enabled``), reads
the environment the planner rendered, and forms the DP group the way vLLM does: a torch TCPStore on
rank 0's address, then a Gloo process group over a PrefixStore, then vLLM's two DP collectives
(all_reduce MAX of an int32 "has unfinished work", all_reduce MIN of an int64 "KV-cache memory").
Every rank must carry the same config hash. Sources: docs/vllm-wiring.md §8, §9;
vLLM v0.11.1 ``ParallelConfig.stateless_init_dp_group``, ``has_unfinished_dp``,
``sync_kv_cache_memory_size`` and ``vllm/distributed/utils.py``.

torch is imported by :mod:`wideep.preflight.rendezvous` only; the operator process never imports it.

Exit codes: 0 every rank joined; 1 the group failed (missing or mismatching ranks, timeout, a failed
collective); 2 the environment or the arguments are invalid; 3 torch is not installed (or older than 2.6).
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_NO_TORCH = 3
