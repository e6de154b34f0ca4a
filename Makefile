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

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

.PHONY: install
install: $(VENV)/.synced ## create .venv with kwf and its test tools

uv.lock: pyproject.toml | $(UV)
	$(UV) lock --quiet

.PHONY: lock
lock: $(UV) ## update uv.lock from pyproject.toml
	$(UV) lock
