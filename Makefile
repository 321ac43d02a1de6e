# The two commands of the README. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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

# One suite, both servers: the time-skipping test server, then the real dev server.
unit: $(STAMP)
	$(BIN)/pytest --workflow-environment=time-skipping
	$(BIN)/pytest --workflow-environment=local

clean:
	rm -rf $(VENV) .pizzeria .pytest_cache .mypy_cache .ruff_cache
