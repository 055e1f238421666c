"""``assert_idempotent``: passes on protected endpoints, fails naming the broken promise.

The endpoints of the test project run in this process, through Django's test client and
DRF's ``APIClient``, on a real Redis (or, where the test is about the helper itself and
not about Redis, on the in-memory store, so it runs in the fast tier). The example
project's endpoints run in a subprocess with the example's own settings
(tests/support/example_assertions.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import AsyncClient
from rest_framework.test import APIClient

from django_idempotency.testing import PromiseBroken, RedisServer, assert_idempotent
from django_idempotency.testing.promises import (
    CHANGED,
    DUPLICATES,
    EXACTLY_ONCE,
    MALFORMED,
    PROMISES,
    REPLAY,
    SIDE_EFFECTS,
    Result,
    Verdict,
)

from .support import conformance_views, views

ROOT = Path(__file__).resolve().parent.parent
MEMORY = {"STORE": "django_idempotency.stores.memory.open_store", "WAIT_TIMEOUT": 10}


def verdicts(results: list[Any]) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in results}


def broken(excinfo: pytest.ExceptionInfo[PromiseBroken]) -> set[str]:
    """The promises the failure names as broken (each also in its message)."""
    names = set(excinfo.value.broken)
    assert all(name in str(excinfo.value) for name in names)
    return names


def row(excinfo: pytest.ExceptionInfo[PromiseBroken], name: str) -> Result:
    return next(r for r in excinfo.value.results if r.name == name)


@pytest.mark.parametrize(
    ("path", "counter"),
    [
        ("/middleware/", "middleware"),
        ("/decorator/", "decorator"),
        ("/cbv/", "cbv"),
        ("/drf/", "drf"),
        ("/api/charges/", "viewset-create"),
        ("/async/", "async"),
    ],
)
def test_protected_endpoints_keep_every_promise(client: Any, path: str, counter: str) -> None:
    results = assert_idempotent(
        APIClient() if "drf" in path or "api" in path else client,
        "POST",
        path,
        {"amount": 1999, "currency": "eur"},
        executed=lambda: views.calls[counter],
    )
    assert [r.name for r in results] == list(PROMISES)
    assert set(verdicts(results).values()) == {Verdict.PASS}


def test_reject_mode_view_passes_when_rejecting_is_expected(client: Any) -> None:
    """``conflict="reject"``: duplicates that arrive while the first runs get 409, which is
    what that view promises; every other promise holds as with waiting."""
    refused_before = sum(conformance_views._conflicts.values())
    results = assert_idempotent(
        client,
        "POST",
        "/conformance/rejecting/?hold=9",
        {"amount": 1},
        conflict="reject",
        executed=lambda: conformance_views.executions["rejecting"],
    )
    assert set(verdicts(results).values()) == {Verdict.PASS}
    # The first held until the 9 duplicates were refused: 409s, accepted in this mode.
    assert sum(conformance_views._conflicts.values()) - refused_before == 9
    with pytest.raises(PromiseBroken) as excinfo:
        assert_idempotent(client, "POST", "/conformance/rejecting/?hold=9", {"amount": 1})
    assert broken(excinfo) == {DUPLICATES}


def test_form_view_behind_the_middleware(client: Any) -> None:
    results = assert_idempotent(
        client,
        "POST",
        "/middleware/",
        {"name": "Ada", "amount": "5"},
        content_type="application/x-www-form-urlencoded",
        executed=lambda: views.calls["middleware"],
    )
    assert set(verdicts(results).values()) == {Verdict.PASS}


@pytest.mark.no_redis
def test_unprotected_view_fails_exactly_once(client: Any, settings: Any) -> None:
    settings.IDEMPOTENCY = MEMORY
    with pytest.raises(PromiseBroken) as excinfo:
        assert_idempotent(
            client,
            "POST",
            "/conformance/unprotected/",
            {"amount": 1},
            executed=lambda: conformance_views.executions["unprotected"],
        )
    assert {REPLAY, CHANGED, MALFORMED, EXACTLY_ONCE, SIDE_EFFECTS} == broken(excinfo)
    # Both responses are shown: the first and the retry, each with the body it got.
    first, retry = (e.reply.body for e in row(excinfo, REPLAY).evidence)
    assert first != retry
    assert first.decode() in str(excinfo.value) and retry.decode() in str(excinfo.value)


@pytest.mark.no_redis
def test_view_storing_a_new_body_each_time_fails_the_replay(client: Any, settings: Any) -> None:
    settings.IDEMPOTENCY = MEMORY
    with pytest.raises(PromiseBroken) as excinfo:
        assert_idempotent(client, "POST", "/conformance/rerendering/", {"amount": 1})
    # Marked as replays, but each with a body of its own: the replay and the concurrent
    # duplicates fail; one of the duplicates still ran first, unmarked.
    assert {REPLAY, CHANGED, MALFORMED, DUPLICATES} == broken(excinfo)
    assert row(excinfo, REPLAY).reason == "differs"
    assert row(excinfo, EXACTLY_ONCE).verdict is Verdict.PASS


@pytest.mark.no_redis
def test_body_ignoring_view_fails_the_changed_body_promise(client: Any, settings: Any) -> None:
    settings.IDEMPOTENCY = MEMORY
    with pytest.raises(PromiseBroken) as excinfo:
        assert_idempotent(client, "POST", "/conformance/body-ignoring/", {"amount": 1})
    assert broken(excinfo) == {CHANGED}


@pytest.mark.no_redis
def test_signed_requests_get_headers_made_from_each_body(client: Any, settings: Any) -> None:
    """A callable ``headers`` is called with each body, so a changed body is signed too."""
    settings.IDEMPOTENCY = MEMORY
    seen: list[bytes] = []

    def sign(body: bytes) -> dict[str, str]:
        seen.append(body)
        return {"X-Signature": str(len(body))}

    assert_idempotent(client, "POST", "/middleware/", {"a": 1}, headers=sign, concurrency=2)
    assert len(set(seen)) == 2  # the body and the changed body


@pytest.mark.no_redis
@pytest.mark.django_db
def test_open_transaction_is_refused_before_anything_runs(client: Any, settings: Any) -> None:
    settings.IDEMPOTENCY = MEMORY
    before = views.calls["middleware"]
    with pytest.raises(RuntimeError, match="TransactionTestCase"):
        assert_idempotent(client, "POST", "/middleware/", {"a": 1})
    assert views.calls["middleware"] == before
    results = assert_idempotent(client, "POST", "/middleware/", {"a": 1}, concurrency=1)
    assert verdicts(results)[EXACTLY_ONCE] is Verdict.NOT_APPLICABLE


@pytest.mark.slow
def test_duplicate_threads_close_their_database_connections(
    redis_server: RedisServer, postgres: Any, postgres_database: str
) -> None:
    """Each duplicate's thread closes the connection its view opened, as a server thread
    would; left open, they outlive the threads, and PostgreSQL refuses to drop the test
    database at the end of the user's run."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.support.pg_settings",
        PYTHONPATH=str(ROOT),
        REDIS_URL=redis_server.url,
        **postgres.environ(postgres_database),
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.connection_check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 1  # the main thread's, asking


@pytest.mark.no_redis
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"concurrency": 0}, ValueError),
        ({"concurrency": 10_000}, ValueError),
        ({"conflict": "queue"}, ValueError),
        ({"content_type": "application/xml"}, TypeError),
    ],
)
def test_bad_arguments_are_refused(
    client: Any, settings: Any, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    settings.IDEMPOTENCY = MEMORY
    before = views.calls["middleware"]
    with pytest.raises(error):
        assert_idempotent(client, "POST", "/middleware/", {"a": 1}, **kwargs)
    assert views.calls["middleware"] == before


@pytest.mark.no_redis
def test_async_client_is_refused() -> None:
    with pytest.raises(TypeError, match="APIClient"):
        assert_idempotent(AsyncClient(), "POST", "/middleware/", {"a": 1})


@pytest.mark.slow
@pytest.mark.no_redis
def test_example_project_endpoints_keep_every_promise(tmp_path: Path) -> None:
    """The payments API (DRF mixin), the webhook (decorator) and the donation form
    (middleware) of the example project, through its own settings and Redis."""
    with RedisServer() as redis:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(
            DJANGO_SETTINGS_MODULE="exampleproject.settings",
            PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "example_project")]),
            REDIS_URL=redis.url,
            EXAMPLE_DB_PATH=str(tmp_path / "example.sqlite3"),
        )
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.example_assertions"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert set(report) == {"charges", "webhook", "donation"}
    for rows in report.values():
        assert {row["name"]: row["verdict"] for row in rows} == dict.fromkeys(PROMISES, "pass")
