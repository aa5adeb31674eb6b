# gpucenter: two commands on a fresh Debian/Ubuntu machine with Python 3.11+.
#   make run   - set up .venv, migrate, load a demo centre, serve on http://127.0.0.1:8000/
#                (GPUCENTER_PORT=8123 make run: another port, for the server and the CLI alike;
#                 make run EMPTY=1: an empty centre, without the months of demo history)
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
	$(BIN)/python -m pip install --quiet -e '.[dev,jupyter]'
	touch $@ $(STAMP_RUN)

# The port is read by all three commands from GPUCENTER_PORT (default 8000): `demo load`
# records the server's address in the CLI's profile, and `serve` binds it and says so.
run: $(STAMP_RUN)
	$(BIN)/gpucenter db upgrade
	$(BIN)/gpucenter demo load $(if $(EMPTY),--empty,)
	GPUCENTER_SINGLE_USER_OWNER=$${GPUCENTER_SINGLE_USER_OWNER-demo} $(BIN)/gpucenter serve

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
