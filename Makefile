# The README's two commands: `make nightly` and `make test`. Both bootstrap (venv outside the
# clone, Horovod wheel, Delta jars; reused when present) via scripts/bootstrap.sh.
SHELL := /bin/bash
RUN_DATE ?=
LAKE ?= ./lake
PYTEST_ARGS ?=

.PHONY: nightly test bootstrap bench

bootstrap:
	@scripts/bootstrap.sh >/dev/null

# This clone's code, whatever clone the shared venv's editable install points at (bootstrap.sh).
export PYTHONPATH := $(CURDIR)/lib$(if $(PYTHONPATH),:$(PYTHONPATH),)

nightly:
	@VENV=$$(scripts/bootstrap.sh) && "$$VENV/bin/demandlake" --lake "$(LAKE)" nightly $(if $(RUN_DATE),--run-date $(RUN_DATE),)

test:
	@VENV=$$(scripts/bootstrap.sh) && scripts/run_tests.sh "$$VENV" $(PYTEST_ARGS)
