"""The version matrix: Python 3.10-3.13 x Django 4.2 / 5.2 / 6.1, each where that Python
supports it (Django 4.2 runs on Python <= 3.12, Django 6.x needs Python >= 3.12), with the
newest Django REST framework that the Django accepts.

``make matrix`` runs the whole suite in every session; ``make test`` runs the tests marked
``@pytest.mark.matrix`` (doors, ``run()``, concurrency, options) in the oldest and newest
sessions only (``nox -t edges``). Each session installs the package with its ``[dev,drf]``
extras into a virtualenv of its own under ``.nox/``. The two edges install exact versions
from a lock (``requirements/oldest.lock``: the oldest supported Django, redis-py, DRF and
django-redis release lines; ``requirements/newest.lock``: the newest), so drift on PyPI
never turns them red; the other sessions resolve freely within ``setup.cfg``'s ranges.

``make latest`` (the ``latest`` session) installs the newest release of everything, with no
lock, on the newest Python and runs lint, types and the suite: drift shows there first.

Interpreters come from pyenv (``~/.pyenv/versions/3.1x.y/bin/python``, the newest patch
release of each), else nox's own interpreter, else ``python3.1x`` on ``PATH``. A Python
that is none of these is reported on one line and its sessions are skipped; nox never
downloads an interpreter.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import nox

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# Django release -> the Pythons it supports (from Django's own release notes).
DJANGOS = {
    "4.2": ("3.10", "3.11", "3.12"),
    "5.2": ("3.10", "3.11", "3.12", "3.13"),
    "6.1": ("3.12", "3.13"),
}
# The oldest and newest supported pair, and the lock each installs: `make test` runs its
# subset on these.
EDGES = {("3.10", "4.2"): "requirements/oldest.lock", ("3.13", "6.1"): "requirements/newest.lock"}

PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"

nox.options.error_on_missing_interpreters = False
nox.options.download_python = "never"
nox.options.reuse_venv = "yes"


def _release(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


def find_interpreter(version: str) -> str | None:
    """The newest pyenv ``version.N`` interpreter, else nox's own, else ``pythonX.Y`` on PATH."""
    pattern = re.compile(rf"{re.escape(version)}\.\d+")
    releases = (
        sorted(
            (entry for entry in PYENV_VERSIONS.iterdir() if pattern.fullmatch(entry.name)),
            key=lambda entry: _release(entry.name),
        )
        if PYENV_VERSIONS.is_dir()
        else []
    )
    for entry in reversed(releases):
        candidate = entry / "bin" / "python"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    on_path = shutil.which(f"python{version}")
    # A pyenv shim names every version but runs only the selected ones: not a real one.
    if on_path and "/shims/" not in on_path:
        return on_path
    return None


INTERPRETERS = {version: find_interpreter(version) for version in PYTHONS}
for _version, _path in INTERPRETERS.items():
    if _path is None:
        print(
            f"noxfile: Python {_version} not found (no {PYENV_VERSIONS}/{_version}.*/bin/python"
            f" and no python{_version} on PATH): its sessions are skipped"
        )


def _params() -> list[object]:
    params: list[object] = []
    for django, pythons in DJANGOS.items():
        for python in pythons:
            params.append(
                nox.param(
                    # A missing interpreter stays a version string: nox skips the session.
                    INTERPRETERS[python] or python,
                    django,
                    EDGES.get((python, django)),
                    id=f"py{python}-django{django}",
                    tags=["edges"] if (python, django) in EDGES else [],
                )
            )
    return params


@nox.session(tags=["matrix"])
@nox.parametrize(("python", "django", "lock"), _params())
def tests(session: nox.Session, django: str, lock: str | None) -> None:
    """Run the suite (or the pytest arguments after ``--``) on one Python x Django pair."""
    if lock is not None:
        session.install("--require-hashes", "--no-deps", "-r", lock)
        session.install("--no-deps", "--no-build-isolation", ".")
        # Type checks hold on these versions too (ignores that depend on a version say so).
        session.run("mypy", "django_idempotency")
    else:
        session.install(".[dev,drf]", f"Django~={django}.0")
        if _release(django) >= (6,):
            # A real worker backend for the Django Tasks door (tests/test_tasks_worker.py);
            # it builds on django.tasks, so older Djangos skip that module.
            session.install("django-tasks-db>=0.13")
    _versions(session)
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=INTERPRETERS["3.13"] or "3.13")
def latest(session: nox.Session) -> None:
    """The newest release of everything, unlocked: lint, types and the suite."""
    session.install("--upgrade", "--upgrade-strategy", "eager", ".[dev,drf]", "django-tasks-db")
    _versions(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "django_idempotency", "tests")
    session.run("mypy", "--config-file", "example_project/mypy.ini", "example_project")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


def _versions(session: nox.Session) -> None:
    session.run(
        "python",
        "-c",
        "import sys, django, rest_framework, redis; "
        "print(f'Python {sys.version.split()[0]}, Django {django.__version__}, '"
        "f'DRF {rest_framework.__version__}, redis-py {redis.__version__}')",
    )
