"""Tests of the Helm chart, the Dockerfile and the GitOps integration (Argo CD health check)."""
