# spotlib — every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spotlib-installed
PROFILE ?= auto
STAGES ?=

.PHONY: help setup reproduce test test-slow lab dry-run base-model calibrate sweep clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'
	@echo
	@echo "PROFILE=auto (default) picks 'paper' when CUDA GPUs are visible, else 'tiny'."

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# Without CUDA, pin the CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build.
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "CUDA GPUs found: installing the gpu extra"; \
	  $(BIN)/pip install --quiet -e ".[dev,gpu]"; \
	else \
	  echo "no CUDA GPU: installing torch==2.13.0 (CPU)"; \
	  $(BIN)/pip install --quiet torch==2.13.0 && $(BIN)/pip install --quiet -e ".[dev]"; \
	fi
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install spotlib (CPU torch pinned when no GPU)

reproduce: setup  ## run the whole study for PROFILE (auto|tiny|paper|file.yaml) into outputs/<profile>/
	$(BIN)/python -m spotlib.reproduce --profile $(PROFILE) $(if $(STAGES),--stages $(STAGES))

dry-run: setup  ## validate PROFILE, print its memory/time plan and preflight (what-if: GPUS=8 GPU_MEM=24)
	$(BIN)/python -m spotlib.reproduce --profile $(PROFILE) --dry-run $(if $(GPUS),--gpus $(GPUS)) $(if $(GPU_MEM),--gpu-memory-gib $(GPU_MEM))

base-model: setup  ## pre-train (or load from cache) the tiny base model and print its scores
	$(BIN)/python -m spotlib.world --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

calibrate: setup  ## is the tiny world one where the paper's premise can occur? (headroom, off-policy Oracle, forgetting)
	$(BIN)/python -m spotlib.calibrate --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

sweep: setup  ## learning-rate sweep on the val split: chosen LR per method + trade-off frontier
	$(BIN)/python -m spotlib.stages.sweep --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

test: setup  ## the fast test suite (CPU only, a few minutes)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-slow: setup  ## the slow tests too
	$(BIN)/python -m pytest -q -m "not gpu"

# jupyter_server 2.x: the login token is IdentityProvider.token (ServerApp.token is deprecated); a root
# user (a container's default) must pass --allow-root or the server refuses to start.
LAB_FLAGS = $(if $(filter 0,$(shell id -u)),--allow-root) $(if $(TOKEN),--IdentityProvider.token=$(TOKEN))
lab: setup  ## JupyterLab on the notebooks (its kernels on the profile's CPU kernels, as make reproduce); TOKEN=... sets the login token
	env $$($(BIN)/python -m spotlib.reproduce --kernel-env --profile $(PROFILE)) $(BIN)/jupyter lab $(LAB_FLAGS) notebooks

clean:  ## remove outputs/ (keeps .venv)
	rm -rf outputs
