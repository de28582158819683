"""wideep: a Kubernetes operator for vLLM wide expert-parallel deployments."""

__version__ = "0.1.0"
