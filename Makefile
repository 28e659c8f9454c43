# spotlib — every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spotlib-installed
PROFILE ?= auto
STAGES ?=

.PHONY: help setup reproduce test test-slow lab dry-run base-model calibrate sweep tensorboard clean

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

base-model: setup  ## pre-train the tiny base model again: bit for bit the shipped one (assets/tiny-base)? and its scores
	$(BIN)/python -m spotlib.world --rebuild --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

calibrate: setup  ## is the tiny world one where the paper's premise can occur? (headroom, off-policy Oracle, forgetting)
	$(BIN)/python -m spotlib.calibrate --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

sweep: setup  ## learning-rate sweep on the val split: chosen LR per method + trade-off frontier
	$(BIN)/python -m spotlib.stages.sweep --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

tensorboard: setup  ## TensorBoard on the training curves (PROFILE=auto: every profile's under outputs/)
	$(BIN)/python -m spotlib.cli tensorboard --profile $(PROFILE)

test: setup  ## the fast test suite (CPU only, a few minutes)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-slow: setup  ## the slow tests too
	$(BIN)/python -m pytest -q -m "not gpu"

lab: setup  ## JupyterLab on the notebooks (its kernels on the profile's CPU kernels, as make reproduce)
	env $$($(BIN)/python -m spotlib.reproduce --kernel-env --profile $(PROFILE)) $(BIN)/jupyter lab notebooks

clean:  ## remove outputs/ (keeps .venv)
	rm -rf outputs
