# Entry points only; the logic lives in Python. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0
ARGS   ?=

.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/thinkswitch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/thinkswitch  ## create .venv and install thinkswitch (torch CPU wheel first)

demo: install  ## run the default experiment: testbed pair, 2 iterations, on CPU (ARGS= for overrides)
	$(BIN)/thinkswitch $(ARGS)

test: install  ## run the whole test suite (what CI runs)
	$(BIN)/pytest $(ARGS)

test-fast: install  ## the fast tier: unit tests, no training (about a minute)
	$(BIN)/pytest -m "not slow" $(ARGS)

bench: install  ## benchmarks: stages vs the bare libraries, stage-cache speedup (prints ratios)
	$(BIN)/python benchmarks/bench.py $(ARGS)

gpu-check: install  ## GPU machine, no hub: QLoRA loop + paper stages at Qwen3-4B shape, JSON lines (ARGS=--device cpu --scale tiny)
	$(BIN)/python benchmarks/gpu_check.py $(ARGS)

lint: install  ## ruff
	$(BIN)/ruff check thinkswitch tests benchmarks

clean:  ## remove the venv (outputs/ and the testbed cache are kept)
	rm -rf $(VENV)

.PHONY: help install demo test test-fast bench gpu-check lint clean
