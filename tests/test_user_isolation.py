"""A user's own tests of a protected view pass, run after run, beside their dev server.

A throwaway project is set up as the README's Install, Quickstart and "Testing your app"
sections say (the same reading as ``test_quickstart``), with a development server
(``runserver``) on the same Redis. The dev server first answers a POST with the key
``"test-key"``, so that key has a record. Then three pytest-django tests (one changes
``IDEMPOTENCY`` first) and two Django ``TestCase`` tests each POST twice with
``"test-key"`` and expect a first run (no ``Idempotent-Replayed``) and a replay: without
isolation every one of them would get the dev server's record (or the previous test's)
instead of a run of its own.

They pass twice in a row under pytest (the plugin is loaded by the package's entry point,
nothing added to the project), twice under ``manage.py test`` (the README's one
``TEST_RUNNER`` line), once each with ``--parallel 2`` and ``--debug-sql`` (their own
result classes), and twice on the in-memory store. Afterwards the dev server's record is
still there and still replays, and no test left a record behind. With the plugin switched
off, or Django's plain runner, the same tests fail: isolation is what makes them pass.

The project runs on this virtualenv's Python (where the package is installed editable,
with its entry points), not in a fresh one: the fresh install is ``test_quickstart``'s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from django_idempotency.testing import RedisServer

from .support.readme import charge_view, code_blocks, post, section
from .support.servers import free_port
from .test_quickstart import as_settings_edit, wait_until_serving

pytestmark = [pytest.mark.slow, pytest.mark.no_redis]

KEY = "test-key"

PYTEST_TESTS = f"""
KEY = {KEY!r}


def charge(client):
    return client.post(
        "/charge/", b"{{}}", content_type="application/json", headers={{"Idempotency-Key": KEY}}
    )


def check_runs_then_replays(client):
    first = charge(client)
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first, "the first request was answered by a replay"
    retry = charge(client)
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content


def test_a_charge_runs_once(client):
    check_runs_then_replays(client)


def test_another_charge_with_the_same_key_runs_once(client):
    check_runs_then_replays(client)


def test_a_charge_under_changed_settings_runs_once(client, settings):
    # A settings change rebuilds the engine: the rebuilt one is the test's own too.
    settings.IDEMPOTENCY = {{**settings.IDEMPOTENCY, "TTL": 60}}
    check_runs_then_replays(client)
"""

TESTCASE_TESTS = f"""
from django.test import TestCase

KEY = {KEY!r}


class Charges(TestCase):
    def check_runs_then_replays(self):
        headers = {{"Idempotency-Key": KEY}}
        first = self.client.post(
            "/charge/", b"{{}}", content_type="application/json", headers=headers
        )
        self.assertEqual(first.status_code, 201, first.content)
        self.assertNotIn("Idempotent-Replayed", first)
        retry = self.client.post(
            "/charge/", b"{{}}", content_type="application/json", headers=headers
        )
        self.assertEqual(retry["Idempotent-Replayed"], "true")
        self.assertEqual(retry.content, first.content)

    def test_a_charge_runs_once(self):
        self.check_runs_then_replays()


# A second class, so that --parallel has two subsuites to hand to its workers.
class MoreCharges(Charges):
    def test_a_charge_runs_once(self):
        self.check_runs_then_replays()
"""

PYTEST_INI = """[pytest]
DJANGO_SETTINGS_MODULE = mysite.settings
python_files = tests.py test_*.py
"""

MEMORY_SETTINGS = """from .settings import *  # noqa: F403

IDEMPOTENCY = {**IDEMPOTENCY, "STORE": "django_idempotency.stores.memory.open_store"}  # noqa: F405
"""


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def build_project(home: Path, redis_url: str, env: dict[str, str]) -> Path:
    """``startproject``, then the README's settings, a protected view and the tests."""
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite"], check=True, cwd=home, env=env
    )
    project = home / "mysite"
    (settings_block,) = [
        b for b in code_blocks(section("install"), "python") if "INSTALLED_APPS" in b
    ]
    settings_block = settings_block.replace("redis://127.0.0.1:6379/0", redis_url)
    (middleware_block,) = [b for b in code_blocks(section("doors"), "python") if "MIDDLEWARE" in b]
    (runner_line,) = [b for b in code_blocks(section("testing"), "python") if "TEST_RUNNER" in b]
    settings = project / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + "\n# From the README's Install section\n"
        + as_settings_edit(settings_block)
        + "\n# From the README's Quickstart (middleware)\n"
        + as_settings_edit(middleware_block)
        + "\n# From the README's Testing your app\n"
        + runner_line
    )
    (project / "mysite" / "settings_memory.py").write_text(MEMORY_SETTINGS)
    (project / "mysite" / "views.py").write_text(charge_view())
    urls = project / "mysite" / "urls.py"
    urls.write_text(
        urls.read_text()
        + "\nfrom . import views  # noqa: E402\n\n"
        + 'urlpatterns += [path("charge/", views.charge)]\n'
    )
    (project / "mysite" / "tests.py").write_text(TESTCASE_TESTS)
    (project / "mysite" / "test_charges.py").write_text(PYTEST_TESTS)
    (project / "pytest.ini").write_text(PYTEST_INI)
    return project


def test_users_tests_reusing_one_key_pass_twice_beside_the_dev_server(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTEST_ADDOPTS", "VIRTUAL_ENV"}
    }
    python = sys.executable
    pytest_argv = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    manage = [python, "manage.py"]

    with RedisServer() as redis:
        project = build_project(tmp_path, redis.url, env)
        subprocess.run([*manage, "migrate", "-v0"], check=True, cwd=project, env=env)
        client = redis.client()

        def records(pattern: str) -> set[bytes]:
            return set(client.scan_iter(match=pattern, count=1000))

        port = free_port()
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(port, server)
            dev_first = post(port, KEY)
            dev_records = records("idem:{*}")

            runs = {
                "pytest, first run": run(pytest_argv, project, env),
                "pytest, second run": run(pytest_argv, project, env),
                "manage.py test, first run": run([*manage, "test", "-v2"], project, env),
                "manage.py test, second run": run([*manage, "test", "-v2"], project, env),
                "manage.py test --parallel 2": run(
                    [*manage, "test", "-v2", "--parallel", "2"], project, env
                ),
                "manage.py test --debug-sql": run([*manage, "test", "--debug-sql"], project, env),
                "pytest on the in-memory store, first run": run(
                    [*pytest_argv, "--ds", "mysite.settings_memory"], project, env
                ),
                "pytest on the in-memory store, second run": run(
                    [*pytest_argv, "--ds", "mysite.settings_memory"], project, env
                ),
            }
            dev_again = post(port, KEY)
            left = {
                "dev": records("idem:{*}"),
                "tests": records("idem:test-*"),
            }

            # Controls: without the plugin, or with Django's plain runner, they fail.
            unisolated_pytest = run([*pytest_argv, "-p", "no:django_idempotency"], project, env)
            plain_runner = run(
                [*manage, "test", "--testrunner", "django.test.runner.DiscoverRunner"],
                project,
                env,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
        client.close()

    for name, result in runs.items():
        assert result.returncode == 0, f"{name}:\n{output(result)}"
    for name in ("pytest, first run", "pytest, second run"):
        assert "5 passed" in runs[name].stdout, output(runs[name])
    for name in ("manage.py test, first run", "manage.py test, second run"):
        assert "Ran 2 tests" in runs[name].stderr, output(runs[name])
        assert "IsolatedTestRunner" not in runs[name].stderr  # no error naming it

    # The dev server's record is untouched: it still replays its own first answer.
    assert dev_first[0] == 201 and dev_first[2] is None, dev_first
    assert dev_again == (201, dev_first[1], "true")
    assert dev_records and left["dev"] == dev_records
    assert left["tests"] == set(), "a test's records were left behind"

    assert unisolated_pytest.returncode != 0, output(unisolated_pytest)
    assert "5 failed" in unisolated_pytest.stdout, output(unisolated_pytest)
    assert plain_runner.returncode != 0, output(plain_runner)
    assert "FAILED (failures=2)" in plain_runner.stderr, output(plain_runner)
