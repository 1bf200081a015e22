# `make run` and `make test` each set up everything they need, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint audit lock services system-deps clean bench-gateway bench-soak

$(BIN)/python:
	@bash scripts/system-deps.sh build
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python is built once per machine kind into LLAMA_WHEELS (minutes the first time
# only), for a fixed instruction set rather than -march=native: pip's own wheel cache would
# hand a wheel built on one CPU to another, and some virtual machines advertise AMX (which
# the native build then uses) without allowing it, so generation dies of SIGILL.
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' requirements-dev.lock)
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_WHEELS := $(HOME)/.cache/mvm_chat/llama-cpp-x86-64-avx2
else
LLAMA_CMAKE := -DGGML_NATIVE=OFF
LLAMA_WHEELS := $(HOME)/.cache/mvm_chat/llama-cpp-$(shell uname -m)
endif

# Reinstall only when the project metadata or this file changes.
# torch is pinned and installed first so that the plugins' resolver keeps this (CPU) build.
EMBEDDINGS := plugins/mvm-chat-embeddings
$(STAMP): pyproject.toml $(EMBEDDINGS)/pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_VERSION) ($(LLAMA_CMAKE)); a few minutes, once"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir \
	    -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION); }
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall \
	  $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet -e $(EMBEDDINGS)
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mvm-chat serve

services:
	@bash scripts/system-deps.sh services
	@bash scripts/services.sh

# The audit first: it never fails for want of network (see scripts/audit.sh), only on a known
# vulnerability in the locked dependencies.
test: install services audit
	$(BIN)/python -m pytest

# mvm_chat against LiteLLM's proxy (installed into bench/.venv-litellm on first use); see
# docs/benchmarks.md. BENCH_ARGS=--quick for a short smoke run.
bench-gateway: install services
	$(BIN)/python bench/gateway.py $(BENCH_ARGS)

# Issue 8's soak: 10 minutes of mixed REST, SSE and WebSocket traffic at 50 clients (about 12
# minutes in all); see docs/benchmarks.md. BENCH_ARGS="--duration 30 --warmup 10" for a smoke run.
bench-soak: install services
	$(BIN)/python bench/soak.py $(BENCH_ARGS)

lint: install audit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict mvm_chat

# pip-audit of requirements.lock and requirements-dev.lock (docs/security.md, "Supply chain").
audit: install
	@bash scripts/audit.sh

# Regenerates the hash-pinned lock files from pyproject.toml, resolved against PyPI alone
# (PIP_CONFIG_FILE=/dev/null: no local mirror, wheel folder or constraint file leaks in).
LOCK := PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock  (pip-compile --generate-hashes; docs/security.md)" $(BIN)/pip-compile --quiet \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	--index-url https://pypi.org/simple $(LOCK_ARGS)
# Keeps the pins it can; LOCK_ARGS=--upgrade moves every pin to the newest release.
lock: install
	$(LOCK) --output-file requirements.lock pyproject.toml
	$(LOCK) --extra dev --output-file requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
