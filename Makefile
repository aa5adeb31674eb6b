# gpucenter: two commands on a fresh Debian/Ubuntu machine with Python 3.11+.
#   make run   - set up .venv, migrate, load demo data, serve on http://127.0.0.1:8000/
#   make test  - set up .venv with dev extras; ruff, import rules, mypy, the whole test suite

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP_RUN  = $(VENV)/.installed-run
STAMP_DEV  = $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/gpucenter db upgrade
	$(BIN)/gpucenter demo load
	@echo
	@echo "  gpucenter is starting on http://127.0.0.1:8000/"
	@echo "  demo login: user 'demo', password 'demo-password' (the CLI is already signed in)"
	@echo "  try: $(BIN)/gpucenter job submit -p demo -g 2 -- 'nvidia-smi -L || echo \$$CUDA_VISIBLE_DEVICES'"
	@echo
	$(BIN)/gpucenter serve

lint: $(STAMP_DEV)
	$(BIN)/ruff check gpucenter tests bench
	$(BIN)/ruff format --check gpucenter tests bench
	$(BIN)/lint-imports --no-logo

typecheck: $(STAMP_DEV)
	$(BIN)/mypy gpucenter

pytest: $(STAMP_DEV)
	$(BIN)/pytest -q -ra

test: lint typecheck pytest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
