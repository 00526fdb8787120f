# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck unit e2e slow bench check sync clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## Start the bot with the settings in .env
run: $(STAMP)
	$(PY) -m bot

## Check the settings and reach the API with the key
check: $(STAMP)
	$(PY) -m bot check

## Force a sync of the slash commands with Discord
sync: $(STAMP)
	$(PY) -m bot sync

## Lint, type-check and run every test (unit + end to end)
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## Only the end-to-end suite (the real bot process against fake Discord and fake CometAPI)
e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e

## The long fuzz and crash-soak runs that make test leaves out
slow: $(STAMP)
	$(PY) -m pytest -q -m slow -p no:timeout

## Print the benchmark figures
bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
