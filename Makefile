# fustal: `make demo` runs the whole pipeline on the embedded synthetic dataset; `make test` runs
# the test suite. Both create or reuse .venv and install everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fustal-installed
# CPU build; GPU users install their CUDA build of torch into .venv first (see README).
TORCH ?= torch==2.13.0
# two workers (CI has 2 cores; the in-process runs are single-threaded); module fixtures that
# train are built once (each module on one worker), the longest modules first, in the order of
# tests/conftest.py's LONG_FIRST (xdist would otherwise order the modules by their test count)
PYTEST_ARGS ?= -n 2 --dist loadscope --no-loadscope-reorder

.PHONY: install demo test test-full lint typecheck check format bench bench-map bench-proposals \
	bench-student bench-distill bench-paper clean

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

typecheck: install
	$(PY) -m mypy fustal

# everything CI runs
check: lint typecheck test

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: bench-map bench-proposals bench-student bench-distill bench-paper

bench-map: install
	$(PY) scripts/bench_map.py

bench-proposals: install
	$(PY) scripts/bench_proposals.py

bench-student: install
	$(PY) scripts/bench_student.py

bench-distill: install
	$(PY) scripts/bench_distill.py

bench-paper: install
	$(PY) scripts/bench_paper.py

clean:
	rm -rf outputs/runs outputs/multiruns outputs/cache data/synthetic
