# safemerge — every target creates its own virtual environment (.venv) if it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-fast bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## The main job: the built-in study (mix vs merge) on the built-in world, report in runs/demo/
demo: $(STAMP)
	$(BIN)/safemerge study --out runs/demo

## The whole test suite, slow tests included (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -m "" -q -p no:cacheprovider

## Fast tests only
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/merge_bench.py
	$(BIN)/python bench/search_bench.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
