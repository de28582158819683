"""The controller runtime: an asyncio Kubernetes client, informers feeding a watch cache, a work queue, Lease
leader election and managedFields surgery. It knows nothing of vLLM or gangs (import contracts)."""
