"""Redis failing under the app: killed and restarted, stalled, full.

Each test runs its own throwaway ``RedisServer`` so it can kill, pause or fill it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from django_idempotency import IdempotencyUnavailable, ResultNotStored, checks, run
from django_idempotency.http import PROBLEM_CONTENT_TYPE

from .support import views
from .support.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.core]

SOCKET_TIMEOUT = 0.5


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(maxmemory_policy="noeviction") as server:
        yield server


@pytest.fixture(params=["url", "django-redis"])
def app_on(request: pytest.FixtureRequest, settings: Any, server: RedisServer) -> RedisServer:
    """The app on ``server`` through a URL or a django-redis alias, fail_closed."""
    if request.param == "url":
        redis_setting = f"{server.url}?socket_timeout={SOCKET_TIMEOUT}&socket_connect_timeout=1"
    else:
        settings.CACHES = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": server.url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": SOCKET_TIMEOUT},
            }
        }
        redis_setting = "default"
    settings.IDEMPOTENCY = {"REDIS": redis_setting, "LOCK_TTL": 5, "WAIT_TIMEOUT": 5}
    views.calls.clear()
    return server


def post(client: Client, key: str) -> Any:
    return client.post(
        "/middleware/", data=key, content_type="text/plain", headers={"Idempotency-Key": key}
    )


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert json.loads(response.content)["type"].endswith("unavailable")


def test_redis_killed_and_restarted_during_a_stream_503s_then_recovers(app_on):
    server = app_on
    outcomes: list[tuple[str, int, bool]] = []  # (phase, status, replayed)
    phase = "up"
    stop = threading.Event()

    def stream() -> None:
        client = Client()
        while not stop.is_set():
            key = uuid.uuid4().hex
            sent_in = phase
            for _ in range(2):  # a new key, then its retry
                response = post(client, key)
                if response.status_code == 503:
                    assert_unavailable(response)
                outcomes.append(
                    (sent_in, response.status_code, response.get("Idempotent-Replayed") == "true")
                )

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        time.sleep(0.3)
        phase = "down"
        server.kill()
        time.sleep(0.5)
        server.start()  # same port, empty: persistence is off
        phase = "restarted"
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()

    by_phase = {p: [(s, r) for q, s, r in outcomes if q == p] for p in ("up", "down", "restarted")}
    assert {s for s, _ in by_phase["up"] + by_phase["down"]} <= {201, 503}
    assert any(s == 503 for s, _ in by_phase["down"])
    # Recovered in the same process: every request sent after the restart succeeded,
    # and retries replay (the scripts were loaded again into the new server).
    restarted = by_phase["restarted"]
    assert len(restarted) > 10
    assert {s for s, _ in restarted} == {201}
    assert any(replayed for _, replayed in restarted)
    # A 503 ran nothing: executions are exactly the first-time 201s.
    assert views.calls["middleware"] == sum(s == 201 and not r for _, s, r in outcomes)


def test_client_pause_longer_than_the_socket_timeout_503s_within_it(app_on):
    server = app_on
    client = Client()
    assert post(client, "warm-up").status_code == 201
    pause_ms = 2500
    server.client().execute_command("CLIENT", "PAUSE", pause_ms)
    paused_at = time.monotonic()
    response = post(client, "during-pause")
    elapsed = time.monotonic() - paused_at
    assert_unavailable(response)
    assert elapsed < SOCKET_TIMEOUT + 1.5  # a hang would last the whole 2.5 s pause
    assert views.calls["middleware"] == 1
    # The refused claim left nothing behind, so a retry after the pause runs at once.
    time.sleep(max(pause_ms / 1000 - (time.monotonic() - paused_at), 0) + 0.1)
    retry = post(client, "during-pause")
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry
    assert views.calls["middleware"] == 2


def test_client_pause_with_fail_open_runs_the_view_within_the_timeout(app_on, settings):
    server = app_on
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "ON_REDIS_ERROR": "fail_open"}
    server.client().execute_command("CLIENT", "PAUSE", 2500)
    started = time.monotonic()
    response = post(Client(), "open")
    assert response.status_code == 201
    assert time.monotonic() - started < SOCKET_TIMEOUT + 1.5
    assert views.calls["middleware"] == 1


def fill(server: RedisServer) -> None:
    """Make every new write fail with OOM (maxmemory below what is already used)."""
    server.client().config_set("maxmemory", 1)


def test_redis_full_with_noeviction_is_a_clear_503_and_nothing_runs(app_on):
    server = app_on
    client = Client()
    first = post(client, "stored-before")
    fill(app_on)
    response = post(client, "new-while-full")
    assert_unavailable(response)
    assert "maxmemory" in json.loads(response.content)["detail"]
    assert views.calls["middleware"] == 1
    # An earlier key is replayed (Redis 6 runs the read-only part of the claim) or
    # refused (Redis 7 refuses the script outright), never run again.
    again = post(client, "stored-before")
    assert again.status_code in (201, 503)
    if again.status_code == 201:
        assert again.content == first.content
    assert views.calls["middleware"] == 1
    server.client().config_set("maxmemory", 0)
    assert post(client, "new-while-full").status_code == 201


def test_run_on_a_full_redis_raises_unavailable_and_does_not_run(settings, server):
    settings.IDEMPOTENCY = {"REDIS": server.url}
    fill(server)
    ran: list[int] = []
    with pytest.raises(IdempotencyUnavailable, match="maxmemory"):
        run("full", lambda: ran.append(1))
    assert ran == []


def test_result_that_cannot_be_stored_on_a_full_redis_is_a_critical_error(settings, server):
    settings.IDEMPOTENCY = {"REDIS": server.url}

    def action() -> str:
        fill(server)  # Redis fills up while the action runs
        return "x" * 10_000

    with pytest.raises(ResultNotStored, match="maxmemory") as critical:
        run("fills-up", action)
    assert critical.value.value == "x" * 10_000


# -- the maxmemory-policy deployment check ------------------------------------------------


def warnings_of(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


@pytest.mark.parametrize(
    "policy", ["allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-random"]
)
def test_check_warns_when_the_policy_can_evict_records(app_on, policy):
    app_on.client().config_set("maxmemory-policy", policy)
    app_on.client().config_set("maxmemory", 100 * 1024 * 1024)
    messages = checks.check_eviction_policy()
    assert warnings_of(messages) == ["django_idempotency.W001"]
    assert policy in messages[0].msg
    assert "noeviction" in (messages[0].hint or "")


def test_check_is_quiet_under_noeviction_or_without_maxmemory(app_on):
    app_on.client().config_set("maxmemory", 100 * 1024 * 1024)
    assert checks.check_eviction_policy() == []  # noeviction
    app_on.client().config_set("maxmemory-policy", "allkeys-lru")
    app_on.client().config_set("maxmemory", 0)
    assert checks.check_eviction_policy() == []  # never evicts without a limit


def test_check_warns_instead_of_failing_when_redis_is_unreachable(settings):
    settings.IDEMPOTENCY = {"REDIS": "redis://127.0.0.1:1/0"}
    messages = checks.check_eviction_policy()
    assert warnings_of(messages) == ["django_idempotency.W002"]
    assert "Connection" in messages[0].msg or "connect" in messages[0].msg


def test_check_gives_up_on_a_stalled_redis_after_its_timeout(app_on, monkeypatch):
    monkeypatch.setattr(checks, "PROBE_TIMEOUT", 0.5)
    app_on.client().execute_command("CLIENT", "PAUSE", 2000)
    started = time.monotonic()
    messages = checks.check_eviction_policy()
    assert warnings_of(messages) == ["django_idempotency.W002"]
    assert time.monotonic() - started < 2


def test_check_runs_with_check_deploy_only(settings, server):
    settings.IDEMPOTENCY = {"REDIS": server.url}
    server.client().config_set("maxmemory-policy", "allkeys-lru")
    server.client().config_set("maxmemory", 100 * 1024 * 1024)
    call_command("check", "--fail-level", "WARNING")  # not a deployment run: no probe
    with pytest.raises(SystemCheckError, match=r"django_idempotency\.W001"):
        call_command("check", "--deploy", "--fail-level", "WARNING")
