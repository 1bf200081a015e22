# `make run` and `make test` each set up everything they need, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint services system-deps clean

$(BIN)/python:
	@bash scripts/system-deps.sh build
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project metadata changes; pip reuses its wheel cache
# (the llama-cpp-python build takes minutes the first time only).
# torch is pinned and installed first so that the plugins' resolver keeps this (CPU) build.
EMBEDDINGS := plugins/mvm-chat-embeddings
$(STAMP): pyproject.toml $(EMBEDDINGS)/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet -e $(EMBEDDINGS)
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mvm-chat serve

services:
	@bash scripts/system-deps.sh services
	@bash scripts/services.sh

test: install services
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict mvm_chat

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
