VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Every install comes from the lock files, hashes checked, so a fresh machine gets exactly
# the versions CI tested. `make lock` re-resolves them on purpose (see README, "Dependencies").
PIP_INSTALL := $(PIP) install -q --disable-pip-version-check --require-hashes --no-deps
UV_VERSION := 0.13.9
LOCK_FLAGS := --python-version 3.11 --universal --generate-hashes -q

.PHONY: up test lint bench lock clean

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.lock
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-test: requirements-test.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) -r requirements-test.lock
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(VENV)/.installed $@

up: $(VENV)/.installed
	$(VENV)/bin/kyb up $(ARGS)

test: $(VENV)/.installed-test
	$(VENV)/bin/pytest -q --durations=15 $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check kyb schemas services tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: $(VENV)/.installed-test
	$(PY) bench/api.py
	$(PY) bench/scheduler.py
	$(PY) bench/startup.py
	$(PY) bench/rollout.py
	$(PY) bench/rollout_deployment.py
	$(PY) bench/network.py
	$(PY) bench/footprint.py

# Re-resolve the lock files after a change to pyproject.toml's dependencies, keeping every pin
# that still fits; `make lock UPGRADE=1` moves everything to the newest versions the ranges allow.
# The build backend (setuptools) is locked too: installs run without build isolation.
ifeq ($(UPGRADE),1)
LOCK_FLAGS += --upgrade
endif
lock:
	test -x $(VENV)/bin/uv || { test -x $(PY) || python3 -m venv $(VENV); $(PIP) install -q uv==$(UV_VERSION); }
	printf 'setuptools>=68\n' | $(VENV)/bin/uv pip compile pyproject.toml - $(LOCK_FLAGS) -o requirements.lock
	printf 'setuptools>=68\n' | $(VENV)/bin/uv pip compile pyproject.toml - --extra test $(LOCK_FLAGS) \
	  -c requirements.lock -o requirements-test.lock

clean:
	rm -rf $(VENV) build *.egg-info
