"""The HTTP lifecycle through Django's test client, parametrized over the three HTTP doors."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from django_idempotency.http import PROBLEM_CONTENT_TYPE

from .support import views

#: Every test here runs on a single server and on a 3-primary Redis Cluster.
pytestmark = [pytest.mark.topologies("single", "cluster"), pytest.mark.matrix, pytest.mark.core]

DOORS = {"middleware": "/middleware/", "decorator": "/decorator/", "drf": "/drf/"}


@pytest.fixture(params=sorted(DOORS))
def door(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(door: str) -> str:
    return DOORS[door]


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    views.calls.clear()


def post(client: Client, url: str, key: str | None = None, body: Any = None, **extra: Any) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(
        url,
        data=json.dumps(body or {"amount": 10}),
        content_type="application/json",
        headers=headers,
        **extra,
    )


def problem(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    doc = json.loads(response.content)
    assert {"type", "title", "status", "detail"} <= set(doc)
    assert doc["status"] == response.status_code
    assert b"Traceback" not in response.content
    return doc


def new_key() -> str:
    return str(uuid.uuid4())


def test_retry_replays_status_headers_and_body_once(client, url, door):
    key = new_key()
    first = post(client, url, key)
    second = post(client, url, key)
    assert first.status_code == 201
    assert second.status_code == 201
    assert second.content == first.content
    assert second["X-Run"] == first["X-Run"] == "1"
    assert second["Content-Type"] == first["Content-Type"]
    assert "Idempotent-Replayed" not in first
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls[door] == 1


def test_replay_leaves_out_set_cookie(client, url):
    key = new_key()
    first = post(client, url, key)
    client.cookies.clear()
    second = post(client, url, key)
    assert "session-ish" in first.cookies
    assert "session-ish" not in second.cookies


def test_get_passes_untouched(client, url, door, redis_client):
    client.get(url, headers={"Idempotency-Key": "k"})
    assert redis_client.dbsize() == 0


def test_missing_key_runs_every_time(client, url, door):
    post(client, url)
    post(client, url)
    assert views.calls[door] == 2


def test_missing_key_is_400_where_required(client, url, door, settings):
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "REQUIRED": True}
    response = post(client, url)
    assert response.status_code == 400
    assert problem(response)["type"].endswith("key-required")
    assert views.calls[door] == 0


@pytest.mark.parametrize(
    "raw",
    ['""', "", "   ", "k" * 256, "caf\u00e9", "two words", '"unterminated', '"a"b"', "tab\there"],
)
def test_malformed_key_is_400_problem_and_nothing_runs(client, url, door, raw):
    response = post(client, url, raw)
    assert response.status_code == 400
    assert problem(response)["type"].endswith("invalid-key")
    assert views.calls[door] == 0


def test_sf_string_and_bare_token_are_the_same_key(client, url, door):
    post(client, url, '"order-7"')
    second = post(client, url, "order-7")
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls[door] == 1


def test_key_format_uuid_rejects_low_entropy_keys(client, url, door, settings):
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "KEY_FORMAT": "uuid"}
    assert post(client, url, "1").status_code == 400
    assert post(client, url, new_key()).status_code == 201
    assert views.calls[door] == 1


def test_same_key_with_different_body_is_422(client, url, door):
    key = new_key()
    post(client, url, key, {"amount": 10})
    response = post(client, url, key, {"amount": 99})
    assert response.status_code == 422
    assert problem(response)["type"].endswith("fingerprint-mismatch")
    assert views.calls[door] == 1


def test_same_key_with_different_query_string_is_422(client, url, door):
    key = new_key()
    post(client, url + "?x=1", key)
    assert post(client, url + "?x=2", key).status_code == 422
    assert views.calls[door] == 1


def test_user_b_never_gets_user_a_response(client, url, door, db):
    alice = User.objects.create_user("alice", password="pw")
    bob = User.objects.create_user("bob", password="pw")
    key = new_key()
    client.force_login(alice)
    first = post(client, url, key)
    other = Client()
    other.force_login(bob)
    second = post(other, url, key)
    assert json.loads(first.content)["user"] == "alice"
    assert json.loads(second.content)["user"] == "bob"
    assert "Idempotent-Replayed" not in second
    assert views.calls[door] == 2


def test_4xx_is_stored_and_replayed(client, url, door):
    key = new_key()
    post(client, url + "?status=409", key)
    second = post(client, url + "?status=409", key)
    assert second.status_code == 409
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls[door] == 1


def test_5xx_releases_the_key_so_a_retry_runs(client, url, door):
    key = new_key()
    assert post(client, url + "?status=503", key).status_code == 503
    second = post(client, url + "?status=503", key)
    assert "Idempotent-Replayed" not in second
    assert views.calls[door] == 2


def test_5xx_is_replayed_with_store_server_errors(client, url, door, settings):
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "STORE_SERVER_ERRORS": True}
    key = new_key()
    post(client, url + "?status=502", key)
    second = post(client, url + "?status=502", key)
    assert second.status_code == 502
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls[door] == 1


def test_exception_releases_the_key_so_a_retry_runs(url, door):
    client = Client(raise_request_exception=False)
    key = new_key()
    assert post(client, url + "?raise=1", key).status_code == 500
    assert post(client, url + "?raise=1", key).status_code == 500
    assert views.calls[door] == 2


@pytest.mark.parametrize("query", ["?stream=1", "?big=2000"])
def test_unreplayable_response_is_never_run_twice(client, url, door, settings, query):
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "MAX_BODY_BYTES": 1000}
    key = new_key()
    first = post(client, url + query, key)
    assert first.status_code == 200
    second = post(client, url + query, key)
    assert second.status_code == 422
    doc = problem(second)
    assert doc["type"].endswith("not-replayable")
    assert ("streaming" if "stream" in query else "1000 bytes") in doc["detail"]
    assert views.calls[door] == 1


def test_redis_down_fails_closed_with_503(client, url, door, settings):
    settings.IDEMPOTENCY = {"REDIS": "redis://127.0.0.1:1/0"}
    response = post(client, url, new_key())
    assert response.status_code == 503
    assert problem(response)["type"].endswith("unavailable")
    assert views.calls[door] == 0


def test_redis_down_fail_open_runs_the_view(client, url, door, settings):
    settings.IDEMPOTENCY = {"REDIS": "redis://127.0.0.1:1/0", "ON_REDIS_ERROR": "fail_open"}
    assert post(client, url, new_key()).status_code == 201
    assert views.calls[door] == 1


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


def test_concurrent_duplicate_waits_and_replays(url, door):
    key = new_key()
    owner, first = _in_thread(lambda: post(Client(), url + "?sleep=0.4", key))
    time.sleep(0.1)
    dup = post(Client(), url + "?sleep=0.4", key)
    owner.join()
    assert dup.status_code == 201
    assert dup.content == first[0].content
    assert dup["Idempotent-Replayed"] == "true"
    assert views.calls[door] == 1


def test_concurrent_duplicate_gets_409_in_reject_mode(url, door, settings):
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "CONFLICT": "reject"}
    key = new_key()
    owner, _ = _in_thread(lambda: post(Client(), url + "?sleep=0.4", key))
    time.sleep(0.1)
    dup = post(Client(), url + "?sleep=0.4", key)
    owner.join()
    assert dup.status_code == 409
    assert int(dup["Retry-After"]) >= 1
    assert problem(dup)["type"].endswith("in-progress")
    assert views.calls[door] == 1


def test_wait_timeout_is_409_with_retry_after(url, door, settings):
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "WAIT_TIMEOUT": 0.2}
    key = new_key()
    owner, _ = _in_thread(lambda: post(Client(), url + "?sleep=0.8", key))
    time.sleep(0.1)
    dup = post(Client(), url + "?sleep=0.8", key)
    owner.join()
    assert dup.status_code == 409
    assert "Retry-After" in dup
    assert problem(dup)["type"].endswith("wait-timeout")


# -- door-specific behaviour ------------------------------------------------------------


def test_exempt_view_is_left_alone_by_the_middleware(client, redis_client):
    key = new_key()
    post(client, "/exempt/", key)
    post(client, "/exempt/", key)
    assert views.calls["exempt"] == 2
    assert redis_client.dbsize() == 0


def test_view_behind_middleware_and_decorator_is_processed_once(client, redis_client):
    # decorator-strict has ttl=60: had the middleware stored it too, there would be
    # a second record with the default TTL.
    key = new_key()
    post(client, "/decorator-strict/", key)
    records = [k for k in redis_client.scan_iter("idem:{*}")]
    assert len(records) == 1
    assert 0 < redis_client.pttl(records[0]) <= 60_000


def test_decorator_arguments_apply(client):
    response = post(client, "/decorator-strict/")
    assert response.status_code == 400  # required=True


def test_decorator_on_class_based_view_via_method_decorator(client):
    key = new_key()
    client.put(
        "/cbv/", data="{}", content_type="application/json", headers={"Idempotency-Key": key}
    )
    second = client.put(
        "/cbv/", data="{}", content_type="application/json", headers={"Idempotency-Key": key}
    )
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls["cbv"] == 1


def test_async_view_with_decorator(async_client):
    import asyncio

    key = new_key()

    async def both() -> list[Any]:
        headers = {"Idempotency-Key": key}
        return await asyncio.gather(
            *(async_client.post("/async/?sleep=0.2", headers=headers) for _ in range(5))
        )

    responses = asyncio.run(both())
    assert {r.content for r in responses} == {responses[0].content}
    assert sum(r.get("Idempotent-Replayed") == "true" for r in responses) == 4
    assert views.calls["async"] == 1


def test_drf_viewset_covers_only_the_configured_actions(client):
    assert client.post("/api/charges/", data={}, format="json").status_code == 400
    key = new_key()
    first = client.post("/api/charges/", headers={"Idempotency-Key": key})
    second = client.post("/api/charges/", headers={"Idempotency-Key": key})
    assert first.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls["viewset-create"] == 1
    for _ in range(2):
        client.patch("/api/charges/1/", headers={"Idempotency-Key": key})
    assert views.calls["viewset-update"] == 2


def test_drf_replays_rendered_bytes_exactly(client):
    key = new_key()
    first = post(client, "/drf/?format=json", key)
    second = post(client, "/drf/?format=json", key)
    assert second.content == first.content
    assert json.loads(second.content)["amount"] == 10


def test_503_detail_does_not_leak_redis_addresses(client, url, settings):
    settings.IDEMPOTENCY = {"REDIS": "redis://127.0.0.1:1/0"}
    detail = problem(post(client, url, new_key()))["detail"]
    assert "127.0.0.1" not in detail and "Error" not in detail
