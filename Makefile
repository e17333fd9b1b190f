VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: up test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(VENV)/.installed $@

up: $(VENV)/.installed
	$(VENV)/bin/kyb up $(ARGS)

test: $(VENV)/.installed-test
	$(VENV)/bin/pytest -q --durations=15 $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check kyb schemas services tests bench
	$(VENV)/bin/lint-imports

bench: $(VENV)/.installed-test
	$(PY) bench/api.py
	$(PY) bench/scheduler.py
	$(PY) bench/startup.py
	$(PY) bench/rollout.py
	$(PY) bench/rollout_deployment.py
	$(PY) bench/network.py
	$(PY) bench/footprint.py

clean:
	rm -rf $(VENV) build *.egg-info
