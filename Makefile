# fustal: `make demo` runs the whole pipeline on the embedded synthetic dataset; `make test` runs
# the test suite. Both create or reuse .venv and install everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fustal-installed
# CPU build; GPU users install their CUDA build of torch into .venv first (see README).
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-full lint format bench bench-map bench-proposals bench-student clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m fustal.train

test: install
	WANDB_MODE=offline $(PY) -m pytest -q $(PYTEST_ARGS)

test-full: install
	WANDB_MODE=offline $(PY) -m pytest -q -m "" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: bench-map bench-proposals bench-student

bench-map: install
	$(PY) scripts/bench_map.py

bench-proposals: install
	$(PY) scripts/bench_proposals.py

bench-student: install
	$(PY) scripts/bench_student.py

clean:
	rm -rf outputs/runs outputs/multiruns outputs/cache data/synthetic
