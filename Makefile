# kwf — every command a developer or CI needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
UV_VERSION  := 0.13.8
UV          := .tools/uv/bin/uv
VENV        := .venv
PY          := $(VENV)/bin/python
KUBE_VERSION := v1.36.3
TOOLS_BIN   := .tools/bin
export PYTHONPATH := operator:.

.PHONY: help
help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(UV):
	$(PYTHON) -m venv .tools/uv
	.tools/uv/bin/pip install -q uv==$(UV_VERSION)

# --locked: fail when uv.lock no longer matches pyproject.toml (run `make lock`).
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --quiet
	touch $@

.PHONY: install
install: $(VENV)/.synced ## create .venv with kwf and its test tools

.PHONY: lock
lock: $(UV) ## update uv.lock from pyproject.toml
	$(UV) lock

# ------------------------------------------------------------------ checks
.PHONY: lint
lint: install ## ruff, ruff format, mypy --strict, import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy operator/kwf
	$(VENV)/bin/lint-imports

.PHONY: format
format: install ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: crds
crds: install ## regenerate crds/ from the models in operator/kwf/api
	$(PY) -m kwf.api.crd crds/

.PHONY: unit
unit: install ## unit tests: pure code, no cluster
	$(VENV)/bin/pytest tests/unit -q

# The test tiers never build anything: what they need is built by the
# targets they depend on, outside pytest's per-test timeout.
.PHONY: cluster-test
cluster-test: install tools kube ## tests against a real kube-apiserver + etcd (started if not running)
	$(VENV)/bin/pytest tests/cluster -q

.PHONY: e2e-test
e2e-test: install tools kube images ## real pods on the local node: step pods, the operator, helm install, bench smoke runs
	$(VENV)/bin/pytest tests/e2e -q

# `make test` is what CI runs (.ci/run): every phase, each timed, and marked
# cold when what it caches was missing as it started.
.PHONY: test
test: ## install everything the tests need and run them all
	@rm -f .phases.log
	@export PHASE_LOG=$(CURDIR)/.phases.log; \
	hack/phase install --cache $(VENV)/.synced $(MAKE) --no-print-directory install && \
	hack/phase demo $(MAKE) --no-print-directory demo && \
	hack/phase lint $(MAKE) --no-print-directory lint && \
	hack/phase unit $(MAKE) --no-print-directory unit && \
	hack/phase tools --cache $(TOOLS_BIN)/helm $(MAKE) --no-print-directory tools && \
	hack/phase images --cache .cluster/images/base.tar.key $(MAKE) --no-print-directory images && \
	hack/phase cluster-up --cache .cluster/bin/$(KUBE_VERSION)/kubelet $(MAKE) --no-print-directory cluster-up && \
	hack/phase cluster-tests $(MAKE) --no-print-directory cluster-test && \
	hack/phase e2e $(MAKE) --no-print-directory e2e-test; \
	rc=$$?; hack/phase-table .phases.log; exit $$rc

.PHONY: test-cold
test-cold: ## make test in a clone of HEAD with every cache empty, as on a fresh machine (KEEP=1 keeps it)
	hack/test-cold

# ------------------------------------------------------------------ tools
# Built from their Go modules at pinned versions, cached in .tools/bin.
.PHONY: tools
tools: ## build the tools the tests use (helm) into .tools/bin (cached)
	hack/build-helm.sh $(TOOLS_BIN)

# ------------------------------------------------------------------ chart
.PHONY: chart-crds
chart-crds: crds ## copy crds/ into the chart; a test fails when they differ
	mkdir -p charts/kwf/files/crds
	rm -f charts/kwf/files/crds/*.yaml
	cp crds/*.yaml charts/kwf/files/crds/

.PHONY: bench-plan
bench-plan: install ## time one plan() pass over 100-, 1,000- and 5,000-step runs
	$(PY) -m bench.plan

# ------------------------------------------------------------------ operator
.PHONY: run
run: install ## run the operator in the foreground against .cluster/kubeconfig
	$(PY) -m kwf.cli operator --kubeconfig .cluster/kubeconfig $(RUN_ARGS)

# ------------------------------------------------------------------ local cluster
# A control plane and a real node on this machine (tests/localcluster); as root.
CLUSTER := $(PYTHON) -m tests.localcluster
export KWF_KUBE_VERSION := $(KUBE_VERSION)

.PHONY: images
images: install ## build the runner, operator and pause images without a registry (cached)
	$(CLUSTER) images

.PHONY: kube
kube: ## build the Kubernetes programs (cached in .cluster/bin) and install the Debian packages the cluster runs
	$(CLUSTER) build

.PHONY: cluster-up
cluster-up: install images ## start the local cluster, or reuse a running one; kubeconfig: .cluster/kubeconfig
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## stop the local cluster; leaves no containers, mounts or bridge behind
	$(CLUSTER) down

.PHONY: cluster-status
cluster-status: ## which parts of the local cluster run
	$(CLUSTER) status

# --------------------------------------------------------------------- local
.PHONY: demo
demo: install ## run examples/diamond.yaml on this machine, no cluster needed
	$(VENV)/bin/kwf run examples/diamond.yaml

.PHONY: bench-local
bench-local: install ## the local executor's cost per step, against bare requests and processes
	$(PY) -m bench.local

.PHONY: bench-operator
bench-operator: install ## the operator on the local cluster against a bare client creating the same Jobs (QUICK=1: shorter)
	$(PY) -m bench.operator $(if $(QUICK),--quick,)
