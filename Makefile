# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist): one per core; PYTEST_JOBS=0 runs the suite in one process.
PYTEST_JOBS ?= auto

.PHONY: serve test lint fmt clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/gateway serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway bench tests fuzz
	$(BIN)/ruff format --check gateway bench tests fuzz
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/pytest -n $(PYTEST_JOBS) --dist worksteal $(PYTEST_ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format gateway bench tests fuzz
	$(BIN)/ruff check --fix gateway bench tests fuzz

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
