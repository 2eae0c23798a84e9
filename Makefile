# Kairos: `make dev` runs everything locally, `make test` checks everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test processes (pytest-xdist). The tests mostly wait on servers and subprocesses, so three
# workers keep two cores busy; each worker starts its own PostgreSQL and Temporal dev server.
TEST_WORKERS ?= 3
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck pytest bench clean install

# (Re)install only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/python -m kairos.tools.dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# First the quick loop docs/architecture.md gives (no server: a logic mistake fails in a minute),
# then the tests that start servers and processes. Together they are every test, each run once.
pytest: $(STAMP)
	sh tests/browser/ensure_chromium.sh
	$(BIN)/pytest -q -m "not slow" -n 2
	$(BIN)/pytest -q -m slow -n $(TEST_WORKERS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
