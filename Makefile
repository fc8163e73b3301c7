# From a fresh clone, two commands:
#
#   make demo    a virtual environment in .venv (CPU torch, distilbeam), small random-weight demo models,
#                and the sample corpus annotated offline with configs/offline-demo.yaml
#   make test    the same environment with the test extra: ruff check, ruff format --check, python -m pytest
#                (what CI runs: .ci/run calls make test VENV=.venv-ci in a fresh environment)
#   make check   the fast loop: the tests not marked slow (under two minutes on two cores)
#
# VENV=DIR puts the environment elsewhere; PYTHON=python3.12 picks the interpreter that creates it.

PYTHON ?= python3
VENV ?= .venv
# torch first, pinned: a looser requirement lets pip choose a build, on Linux x86_64 PyPI's multi-GB CUDA 13
# one. Where a CPU wheel of this version is on disk (the project's build machines) the pin installs it;
# elsewhere install the CPU build first from PyTorch's index, and make keeps it:
#   $(VENV)/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
TORCH := torch==2.13.0
DEMO_MODELS := demo-models
DEMO_OUT := out/offline-demo

BIN := $(VENV)/bin
ACTIVATE := . $(BIN)/activate

.PHONY: demo test check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per install, so that an edit of pyproject.toml installs again and nothing else does.
$(VENV)/.installed-base: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	@if [ ! -f $(DEMO_MODELS)/classifier/config.json ] || [ ! -f $(DEMO_MODELS)/ner/config.json ]; then \
		echo "$(BIN)/distilbeam demo-models $(DEMO_MODELS)"; $(BIN)/distilbeam demo-models $(DEMO_MODELS); \
	fi
	$(BIN)/distilbeam run --config configs/offline-demo.yaml --force
	@echo
	@echo "annotations: $(DEMO_OUT)/part-*.parquet (dead letter: $(DEMO_OUT)/_errors/)"
	@echo "report:      $(DEMO_OUT)/_REPORT.html and $(DEMO_OUT)/_REPORT.md; totals: $(DEMO_OUT)/_SUMMARY.json"

test: $(VENV)/.installed-test
	$(ACTIVATE) && ruff check .
	$(ACTIVATE) && ruff format --check .
	$(ACTIVATE) && python -m pytest

# -m replaces the -m of pytest's addopts, so the gpu tests are deselected here by name.
check: $(VENV)/.installed-test
	$(ACTIVATE) && python -m pytest -m "not slow and not gpu"
