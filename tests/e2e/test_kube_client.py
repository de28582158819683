"""The operator's API client against the real API server: warm connections."""

from __future__ import annotations

import asyncio

from devcluster.cluster import LocalCluster
from wideep.kube.client import KubeClient
from wideep.kube.kubeconfig import Credentials


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


def test_watch_streams_leave_the_warm_connections_to_api_calls(cluster: LocalCluster) -> None:
    """A watch holds its connection for minutes: it must neither take a connection warmed for the next burst of
    API calls nor wait for one when there are more streams than calls in flight."""
    creds = Credentials(server=cluster.server, ca_path=str(cluster.ca_path), token=cluster.token)

    async def scenario() -> None:
        async with KubeClient(creds, concurrency=4) as kube:
            assert await kube.warm(4) == 4
            started = [asyncio.Event() for _ in range(6)]  # more streams than calls in flight

            async def watch(event: asyncio.Event) -> None:
                # From resourceVersion 0 a stream starts with the current objects: default/kubernetes.
                async for _ in kube.watch("Service", "default", "0"):
                    event.set()

            watches = [asyncio.create_task(watch(e)) for e in started]
            try:
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 20)
                assert kube.connections_opened == 4 + 6
                burst = await asyncio.wait_for(
                    asyncio.gather(*(kube.request("GET", "/api/v1/namespaces/default") for _ in range(4))), 10
                )
                assert all(ns["metadata"]["name"] == "default" for ns in burst)
                assert kube.connections_opened == 4 + 6, "a watch took a connection warmed for API calls"
            finally:
                for t in watches:
                    t.cancel()
                await asyncio.gather(*watches, return_exceptions=True)

    asyncio.run(scenario())
