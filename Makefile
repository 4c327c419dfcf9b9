# The two commands: `make run` and `make test`. Both create .venv and install the project
# (building the C core) and are quick when nothing changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
SOURCES_BUILD := pyproject.toml setup.py $(wildcard native/*.c native/*.h native/*.py)

.PHONY: install install-test run test lint typecheck pytest ctest bench clean

install: $(VENV)/.installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python $(SOURCES_BUILD)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) -e '.[bench]'
	touch $@

install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/convergio daemon run

lint: install-test
	$(VENV)/bin/ruff check convergiod clients tests bench actors
	$(VENV)/bin/ruff format --check convergiod clients tests bench actors

typecheck: install-test
	$(VENV)/bin/mypy

pytest: install-test
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: $(VENV)/.installed-bench install-test
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info convergiod/_native*.so
