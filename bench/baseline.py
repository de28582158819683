"""The floor: a plain asyncio + aiohttp client creating exactly the operator's objects.

The objects are ``plan()`` of the same spec (``controller_bench.objects.planned_objects``), owned by a real
ParallelDeployment created in a namespace no operator watches. The client holds the same number of
requests in flight as the operator (64, one pooled session) and uses plain ``POST`` creates, the
cheapest write the API server offers; everything it sends is serialised before the clock starts.

    t0 ── POST the ParallelDeployment ── POST N pods + 3 Services (64 in flight)
       └─ created: the observer has seen them all      └─ Ready: kwok made every pod Ready
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from .controller_bench.cases import Bench, observed_run
from .controller_bench.cluster import Api, cleanup, cluster_pids, make_namespace, wait_quiet
from .controller_bench.common import BASELINE_USER, CONCURRENCY, PD_NAME, BenchError
from .controller_bench.measure import Audit, CpuSampler, loadavg
from .controller_bench.objects import kind_counts, object_path, pdep_doc, planned_objects
from .controller_bench.observer import Observer

PLACEHOLDER_UID = "00000000-0000-4000-8000-0000b0a5e11e"


async def create_all(api: Api, bodies: list[tuple[str, bytes]]) -> tuple[float, list[str]]:
    """POST every (path, JSON body) with at most ``api.concurrency`` in flight; returns (done, errors)."""

    async def one(path: str, data: bytes) -> str | None:
        status, body = await api.call("POST", path, data=data)
        return None if status == 201 else f"{status} {body.get('message', '')}"

    results = await asyncio.gather(*(one(p, d) for p, d in bodies))
    return time.monotonic(), [r for r in results if r is not None]


async def baseline_case(b: Bench, n: int, *, ssa: bool = False) -> dict[str, Any]:
    """Create the N-rank group's objects with the plain client; time created and Ready.

    ``ssa``: a diagnostic variant that creates the same objects with server-side apply (PATCH
    application/apply-patch+yaml, as the operator does) instead of POST, to split the operator's gap
    into the cost of the verb and the cost of the operator.
    """
    ns = f"bench-base-{n}" + ("-ssa" if ssa else "")
    await make_namespace(b.admin, ns)
    res: dict[str, Any] = {"n": n, "namespace": ns, "verb": "apply" if ssa else "create"}
    res["quiet_wait_s"] = await wait_quiet(b.admin, b.cluster.pids())

    doc = pdep_doc(PD_NAME, ns, n)
    objects = planned_objects(doc, PLACEHOLDER_UID)
    if ssa:
        bodies = [(f"{object_path(o)}/{o['metadata']['name']}", json.dumps(o).encode()) for o in objects]
    else:
        bodies = [(object_path(o), json.dumps(o).encode()) for o in objects]
    pd_body = json.dumps(doc).encode()
    res["planned"] = kind_counts(objects)
    api = b.user
    assert api.concurrency == CONCURRENCY
    # Open connections, as many as requests in flight: the operator keeps that many open (--warm-connections).
    await asyncio.gather(*(api.call("GET", "/version") for _ in range(api.concurrency)))

    obs = await Observer(b.cluster, ns, "create", n, pd=False).start()
    sampler = CpuSampler({**cluster_pids(b.cluster), "observer": obs.pid}).start()
    a0, load0 = b.audit.offset(), loadavg()
    t0, t0_wall = time.monotonic(), time.time()
    status, pd = await api.call("POST", object_path(doc), data=pd_body)
    if status != 201:
        raise BenchError(f"baseline ParallelDeployment: {status} {pd}")
    uid = pd["metadata"]["uid"].encode()
    placeholder = PLACEHOLDER_UID.encode()
    bodies = [(p, d.replace(placeholder, uid)) for p, d in bodies]
    if ssa:
        params = "?fieldManager=wideep-bench-baseline&force=true"

        async def apply_all() -> tuple[float, list[str]]:
            async def one(path: str, data: bytes) -> str | None:
                st, body = await api.call(
                    "PATCH", path + params, data=data, content_type="application/apply-patch+yaml"
                )
                return None if st in (200, 201) else f"{st} {body.get('message', '')}"

            results = await asyncio.gather(*(one(p, d) for p, d in bodies))
            return time.monotonic(), [r for r in results if r is not None]

        t_client, errors = await apply_all()
    else:
        t_client, errors = await create_all(api, bodies)
    if errors:
        await obs.stop()
        await sampler.stop()
        raise BenchError(f"baseline: {len(errors)} writes failed, first: {errors[0]}")
    await observed_run(b, res, obs, sampler, (t0, t0_wall, a0, load0), BASELINE_USER, b.timeout(n))
    res["t"]["client_done"] = t_client - t0
    res["write_window"] = Audit.window(
        b.audit.events(a0), BASELINE_USER, t0_wall, ("patch", "create"), ("pods", "services")
    )
    if "last" in res["write_window"]:
        res["t"]["first_write"] = res["write_window"]["first"]
        res["t"]["last_write"] = res["write_window"]["last"]
    res["cleanup_s"] = await cleanup(b.admin, ns)
    return res
