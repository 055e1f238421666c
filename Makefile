# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv lint typecheck pytest test demo bench soak clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,drf]'
	touch $@

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy django_idempotency tests
	$(BIN)/mypy --config-file example_project/mypy.ini example_project

pytest: venv
	scripts/ensure-chromium
	$(BIN)/pytest $(PYTEST_ARGS)

# Every check: lint, types, the whole test suite on real Redis servers it starts itself.
test: lint typecheck pytest

# The example project end to end on an embedded Redis (see example_project/README).
demo: venv
	$(BIN)/python example_project/demo.py

# Cost per request against a bare endpoint and the raw-Redis floor (benchmarks/).
bench: venv
	$(BIN)/python benchmarks/run.py

# Mixed traffic against gunicorn for DURATION seconds, then exactly-once assertions.
DURATION ?= 60
soak: venv
	$(BIN)/python -m tests.support.soak --duration $(DURATION)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
