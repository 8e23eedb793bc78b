# Two entry points, both self-installing into .venv on first use:
#   make run    run the daemon on config/integrator.toml
#   make test   install what the tests need, lint, type-check and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/integrator-*)
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	bash .ci/system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' $(foreach p,$(PLUGINS),-e './$(p)[test]')
	touch $(STAMP)

.PHONY: run test lint install clean
install: $(STAMP)

run: $(STAMP)
	$(BIN)/integrator run -c config/integrator.toml

lint: $(STAMP)
	$(BIN)/ruff check integrator tests plugins bench
	$(BIN)/ruff format --check integrator tests plugins bench
	$(BIN)/mypy integrator

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
