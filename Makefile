# Two promises, both from a fresh machine with only python3 and pip: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow lint benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first: the CPU build 2.13.0 lies on the project machines; a plain range would pick a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "torch==2.13.0" \
		|| $(BIN)/pip install --quiet "torch>=2.3,<2.15"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

RUN_ARGS ?=

run: $(STAMP)  ## e.g. make run RUN_ARGS="--force" after the shipped checkpoints changed
	$(BIN)/python experiments/run.py $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

benchmark: $(STAMP)
	$(BIN)/python experiments/benchmark.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
