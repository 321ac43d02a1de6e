# The two commands of the README. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types suite suite-time-skipping suite-dev-server suite-postgres clean

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

test: lint types suite

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

types: $(STAMP)
	$(BIN)/mypy

# The suite, three passes: the time-skipping test server, then the real dev server, both on
# the SQLite ledger; then the tests marked `ledger` (tests/ledger/ and the saga's end-to-end
# ledger tests) once more on the PostgreSQL ledger, a private server they start.
suite: suite-time-skipping suite-dev-server suite-postgres

# The default pass runs its test files in WORKERS processes (pytest-xdist), each with its
# own servers; a file's tests stay together (they share its stack). Most tests wait on
# servers and processes, not on the CPU: two take half the time of one on two cores.
# WORKERS=0 runs them in this one process.
WORKERS ?= 2

suite-time-skipping: $(STAMP)
	$(BIN)/pytest --workflow-environment=time-skipping -n $(WORKERS) --dist loadfile --durations=15

suite-dev-server: $(STAMP)
	$(BIN)/pytest --workflow-environment=local --durations=15

suite-postgres: $(STAMP)
	$(BIN)/pytest --workflow-environment=time-skipping --ledger-backend=postgres -m ledger --durations=10

clean:
	rm -rf $(VENV) .pizzeria .pytest_cache .mypy_cache .ruff_cache
