# `make run`: the demo on the embedded default.  `make test`: services + the whole test suite.
# Both start from nothing: they create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: run test services services-down lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg setup.py constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/desq demo

services: $(VENV)/.installed-dev
	VENV=$(VENV) tests/services.sh up

services-down:
	VENV=$(VENV) tests/services.sh down

test: services
	$(BIN)/pytest

# Re-pin constraints.txt to what a fresh install resolves today (then run `make test`).
lock:
	rm -rf /tmp/desq-lock && $(PYTHON) -m venv /tmp/desq-lock
	/tmp/desq-lock/bin/pip install -q -e '.[dev,mysql]'
	/tmp/desq-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
