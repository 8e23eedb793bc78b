# Two entry points, both self-installing into .venv on first use:
#   make run    run the daemon on config/integrator.toml
#   make test   install what the tests need, lint, type-check and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/integrator-*)
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The daemon alone: the core package (plugins are optional extras an operator adds).
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Everything the tests use: test tools, the `fast` extra (uvloop, the event loop of the
# recommended install, so daemon-process tests run what production runs), every plugin
# under plugins/, and the system packages some tests drive (systemd-analyze, Chromium,
# wrk; installed when root).
$(TEST_STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) | $(BIN)/python
	bash .ci/system-deps
	$(BIN)/python -m pip install --quiet -e '.[test,fast]' $(foreach p,$(PLUGINS),-e './$(p)[test]')
	touch $@ $(RUN_STAMP)

.PHONY: run test lint bench clean
run: $(RUN_STAMP)
	$(BIN)/integrator run -c config/integrator.toml

lint: $(TEST_STAMP)
	$(BIN)/ruff check integrator tests plugins bench
	$(BIN)/ruff format --check integrator tests plugins bench
	$(BIN)/mypy integrator

test: lint
	$(BIN)/pytest

bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
