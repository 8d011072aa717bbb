# diffusim: `make run` opens the app on the baseline scenario, `make test` runs every test.
# Both set everything up from a fresh clone; the only requirements are make and Python >= 3.12.

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Find a Python 3.13 or 3.12: on PATH first (skipping pyenv shims that refuse), then pyenv's folders.
PYTHON_SYS ?= $(shell for c in python3.13 python3.12 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[3-9]*/bin/python3 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3 2>/dev/null) python3; do \
	  if $$c -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then command -v $$c || echo $$c; break; fi; done)

.PHONY: run test setup lint bench lock clean browser-deps

$(STAMP): pyproject.toml requirements.lock
	@if [ -z "$(PYTHON_SYS)" ]; then \
	  echo "error: diffusim needs Python 3.12 or newer (Mesa 3.5 requires it); none was found."; \
	  echo "       Install python3.12 or python3.13, or pass PYTHON_SYS=/path/to/python3.12"; exit 1; fi
	@echo "using $(PYTHON_SYS)"
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/streamlit run app.py --server.headless true --browser.gatherUsageStats false

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_sweep.py

# Refresh the lock after changing pyproject.toml (needs the package registries).
lock:
	rm -rf /tmp/diffusim-lock && $(PYTHON_SYS) -m venv /tmp/diffusim-lock
	/tmp/diffusim-lock/bin/pip install -q -e '.[dev]'
	/tmp/diffusim-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
