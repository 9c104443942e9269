# safemerge — every target creates its own virtual environment (.venv) if it is missing.
# .venv is installed from requirements.lock (every package at an exact version) and checked against it;
# `make lock` refreshes the lock on purpose, and a changed lock (or pyproject) rebuilds .venv from scratch.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
PIP_TOOLS := pip-tools==7.7.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-fast test-latest bench venv lock clean

# torch first: the lock pins the CPU build on this machine's disk (see requirements/constraints.in).
$(STAMP): $(LOCK) requirements/no-deps.txt pyproject.toml
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps $$(grep -E '^torch==' $(LOCK) | cut -d' ' -f1)
	$(BIN)/pip install -q --no-deps -r $(LOCK) -r requirements/no-deps.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python tools/lockcheck.py $(BIN)/python
	touch $(STAMP)

venv: $(STAMP)

## Refresh requirements.lock from pyproject.toml (newest versions its ranges allow, torch per the constraints)
lock:
	test -x .lockenv/bin/pip-compile || ($(PY) -m venv .lockenv && .lockenv/bin/pip install -q $(PIP_TOOLS))
	.lockenv/bin/pip-compile -q --upgrade --extra test --strip-extras --allow-unsafe --no-header \
	  --annotation-style line --no-emit-index-url --no-emit-find-links -c requirements/constraints.in -o $(LOCK) pyproject.toml

## The main job: the built-in study (mix vs merge) on the built-in world, report in runs/demo/
demo: $(STAMP)
	$(BIN)/safemerge study --out runs/demo

## The whole test suite, slow tests included (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -m "" -q -p no:cacheprovider

## Fast tests only
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

## Drift check (not in CI): a throwaway venv with the newest releases pyproject allows, then the fast tests
test-latest:
	rm -rf .venv-latest
	$(PY) -m venv .venv-latest
	.venv-latest/bin/pip install -q torch==$$(grep -E '^torch==' $(LOCK) | cut -d'=' -f3 | cut -d'+' -f1 | cut -d' ' -f1)
	.venv-latest/bin/pip install -q --upgrade-strategy eager -e '.[test]'
	.venv-latest/bin/pip install -q --no-deps -r requirements/no-deps.txt
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	  echo "test-latest: differences from the lock:"; $(PY) tools/lockcheck.py .venv-latest/bin/python; \
	  exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/merge_bench.py
	$(BIN)/python bench/search_bench.py

clean:
	rm -rf $(VENV) .venv-latest .lockenv runs build *.egg-info src/*.egg-info
