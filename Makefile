# kwf — every command a developer or CI needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
UV_VERSION  := 0.13.8
UV          := .tools/uv/bin/uv
VENV        := .venv
PY          := $(VENV)/bin/python
KUBE_VERSION := v1.36.3
export PYTHONPATH := operator:.

.PHONY: help
help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

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

.PHONY: cluster-test
cluster-test: install ## tests against a real kube-apiserver + etcd (started if not running)
	$(VENV)/bin/pytest tests/cluster -q

.PHONY: e2e-test
e2e-test: install ## real pods on the local node: step pods, the operator, helm install
	$(VENV)/bin/pytest tests/e2e -q

# `make test` is what CI runs (.ci/run): every phase, each timed.
.PHONY: test
test: ## install everything the tests need and run them all
	@rm -f .phases.log
	@export PHASE_LOG=$(CURDIR)/.phases.log; \
	hack/phase install $(MAKE) --no-print-directory install && \
	hack/phase lint $(MAKE) --no-print-directory lint && \
	hack/phase unit $(MAKE) --no-print-directory unit && \
	hack/phase images $(MAKE) --no-print-directory images && \
	hack/phase cluster-up $(MAKE) --no-print-directory cluster-up && \
	hack/phase cluster-tests $(MAKE) --no-print-directory cluster-test && \
	hack/phase e2e $(MAKE) --no-print-directory e2e-test; \
	rc=$$?; echo "==> phases:"; cat .phases.log; exit $$rc

# ------------------------------------------------------------------ chart
.PHONY: helm
helm: ## build helm (version pinned in hack/build-helm.sh) into .cluster/bin
	hack/build-helm.sh .cluster/bin

.PHONY: chart-crds
chart-crds: crds ## copy crds/ into the chart; a test fails when they differ
	mkdir -p charts/kwf/files/crds
	rm -f charts/kwf/files/crds/*.yaml
	cp crds/*.yaml charts/kwf/files/crds/

.PHONY: bench-plan
bench-plan: $(VENV)/.synced ## time one plan() pass over 100-, 1,000- and 5,000-step runs
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
