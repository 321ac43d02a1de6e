# The two commands of the README. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Playwright (for the order page's browser test) drives Debian's Chromium: no browser
	# is ever downloaded for it.
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e '.[dev]'
	# Bytecode up front: the workflow sandbox imports the package for every order, and
	# without .pyc files (PYTHONDONTWRITEBYTECODE) it compiles it every time.
	$(BIN)/python -m compileall -q src
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pizzeria demo

test: lint types unit

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

types: $(STAMP)
	$(BIN)/mypy

# Tests that touch the ledger, run a third time on PostgreSQL (a private server they start).
LEDGER_TESTS := tests/test_ledger.py tests/test_ledger_versions.py tests/test_ledger_postgres.py \
	tests/test_stock.py \
	tests/test_activities.py tests/test_late_writes.py tests/test_workflow.py

# One suite, both servers: the time-skipping test server, then the real dev server, both
# on the SQLite ledger; then the ledger's tests again on the PostgreSQL ledger.
unit: $(STAMP)
	$(BIN)/pytest --workflow-environment=time-skipping
	$(BIN)/pytest --workflow-environment=local
	$(BIN)/pytest --workflow-environment=time-skipping --ledger-backend=postgres $(LEDGER_TESTS)

clean:
	rm -rf $(VENV) .pizzeria .pytest_cache .mypy_cache .ruff_cache
