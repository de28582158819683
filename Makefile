# wideep task runner. Every target installs what it needs (virtualenv, control plane) itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := $(shell bash tools/venv.sh)
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)
export PATH := $(VENV)/bin:$(PATH)
export WIDEEP_STATE_DIR ?= $(CURDIR)/.local

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: cluster-build
cluster-build: ## build etcd, kube-apiserver, controller-manager, scheduler, kwok, helm from Go modules (cached)
	@$(PY) -m devcluster.build

.PHONY: cluster-up
cluster-up: cluster-build ## start the local control plane in the background (kubeconfig: .local/cluster/kubeconfig)
	@$(PY) -m devcluster up

.PHONY: cluster-down
cluster-down: ## stop the local control plane and every process it started
	@$(PY) -m devcluster down

.PHONY: lint
lint: ## ruff, mypy --strict, import contracts
	ruff check operator devcluster tests bench tools
	ruff format --check operator devcluster tests bench tools
	mypy
	lint-imports

.PHONY: fmt
fmt: ## format the code
	ruff format operator devcluster tests bench tools
	ruff check --fix operator devcluster tests bench tools

.PHONY: generate
generate: ## write every generated file (CRD, chart CRD, API docs)
	$(PY) -m wideep.api.generate write

.PHONY: verify
verify: ## fail when a generated file differs from what the generator writes
	$(PY) -m wideep.api.generate check

.PHONY: extras
extras: ## virtualenv with the real vLLM 0.11.1 (+torch), for the argument-parser and preflight tests
	@bash tools/vllm-venv.sh >/dev/null

.PHONY: test-tools
test-tools: ## build the Go tools the tests use (tools/go-tools.txt), once per machine
	@grep -v '^#' tools/go-tools.txt | while read -r name pkg version; do \
	  [ -z "$$name" ] || bash tools/go-tool.sh "$$name" "$$pkg" "$$version" >/dev/null || exit 1; done

.PHONY: test
test: cluster-build extras test-tools lint verify ## everything: lint, generated files, all tests (starts its own control plane)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: ## only the tests that need no control plane (and no image build)
	$(PY) -m pytest -m "not cluster" --ignore=tests/image $(PYTEST_ARGS)

.PHONY: image
image: ## build the operator image with podman and its SBOMs
	@bash tools/image.sh

.PHONY: image-test
image-test: cluster-build ## the image tests
	$(PY) -m pytest tests/image $(PYTEST_ARGS)

.PHONY: demo
demo: cluster-build ## the main job: control plane + operator + the DeepSeek-style example to Ready
	$(PY) -m devcluster demo

.PHONY: bench
bench: cluster-build ## benchmarks against the API server's own floor
	$(PY) -m bench.run
