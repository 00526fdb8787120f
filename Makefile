# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck unit e2e slow bench check sync lock clean

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

## Check everything the bot needs (Discord and the token, the API and the key, the database) and print the invite link
check: $(STAMP)
	$(PY) -m bot check

## Force a sync of the slash commands with Discord
sync: $(STAMP)
	$(PY) -m bot sync

## Lint (the Dockerfile too), type-check and run every test (unit + end to end)
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint --no-color Dockerfile
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint --no-color Dockerfile

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

## Refresh requirements.lock (every package pinned with its hashes; the Docker image installs
## it) from pyproject.toml, for the image's Python 3.11 on Linux, against the public index only
lock: $(STAMP)
	$(PY) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "make lock needs Python 3.11, the Docker image'"'"'s")'
	$(PY) -m pip install --quiet 'pip-tools>=7.4'
	env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null $(VENV)/bin/pip-compile \
	  --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
