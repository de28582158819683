"""The operator's API client against the real API server: warm connections."""

from __future__ import annotations

import asyncio

from wideep.devcluster.cluster import LocalCluster
from wideep.reconcile.kube import Credentials, KubeClient


def test_warm_connections_are_reused_by_the_next_burst(cluster: LocalCluster) -> None:
    creds = Credentials(server=cluster.server, ca_path=str(cluster.ca_path), token=cluster.token)
    seen: list[int] = []

    async def scenario() -> None:
        async with KubeClient(creds, concurrency=8, on_connection=lambda: seen.append(1)) as kube:
            assert await kube.warm(8) == 8
            assert kube.connections_opened == 8 == len(seen)
            assert await kube.warm(8) == 8
            burst = await asyncio.gather(
                *(kube.request("GET", "/api/v1/namespaces/default") for _ in range(8))
            )
            assert all(ns["metadata"]["name"] == "default" for ns in burst)
            assert kube.connections_opened == 8, (
                "a burst after warming opened new connections (TLS handshakes)"
            )
            assert await kube.warm(100) == 8, "never more connections than requests in flight"
            assert kube.connections_opened == 8

    asyncio.run(scenario())
