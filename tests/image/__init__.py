"""Tests of the operator image itself: built from the unchanged Dockerfile by tools/image.sh (podman, a
private store, a local stand-in for the base image), inspected, its SBOMs read, and run as the chart runs it."""
