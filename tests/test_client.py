"""The client side (django_idempotency.client): one key per logical call, retried safely.

Every behaviour is shown for the three clients (httpx, httpx async, requests) over real
sockets on 127.0.0.1: first against a server that answers from a script (no Django, no
Redis: the fast tier), then against gunicorn serving this package's middleware on the
session's Redis, where executions are counted in Redis by the views, and a TCP proxy
started by the test sees every attempt on the wire (and loses an answer on purpose).
"""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from django_idempotency.client import RetriesExhausted, RetryPolicy
from django_idempotency.options import InvalidOption
from django_idempotency.testing import RedisServer

from .support.client_drivers import DRIVERS, LIBRARY_ERRORS, Send
from .support.client_proxy import Connection, Proxy
from .support.client_scripted import DROP, HANG, scripted
from .support.client_views import GATE, RUNS, wait_for_item
from .support.servers import ROOT, serve_process, server_env


def quick(**options: Any) -> RetryPolicy:
    """A policy with short pauses, for tests where their length is not the point."""
    return RetryPolicy(backoff=0.01, max_backoff=0.02, **options)


@pytest.fixture(params=sorted(DRIVERS))
def client(request: pytest.FixtureRequest) -> tuple[str, Send]:
    """Each retrying client in turn: (name, send)."""
    return request.param, DRIVERS[request.param]


fast = pytest.mark.no_redis


@fast
def test_every_attempt_carries_the_one_minted_key(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted((503, {}), (502, {}), (500, {})) as server:
        answer = send(server.url, quick(), body=b'{"amount": 100}')
    assert answer.status == 201
    sent = [seen.headers["idempotency-key"] for seen in server.seen]
    assert len(sent) == 4 and len(set(sent)) == 1
    # The draft's form, a quoted string, holding a UUID4.
    assert sent[0] == f'"{answer.call.key}"'
    assert uuid.UUID(answer.call.key).version == 4
    assert answer.call.attempts == 4 and not answer.call.replayed
    assert {seen.body for seen in server.seen} == {b'{"amount": 100}'}


@fast
def test_a_new_logical_call_gets_a_new_key(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted() as server:
        first = send(server.url, quick())
        second = send(server.url, quick())
    assert first.call.key != second.call.key


@fast
def test_the_callers_own_key_is_sent_as_written_on_every_attempt(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted((500, {}), (503, {})) as server:
        answer = send(server.url, quick(), headers={"Idempotency-Key": "order-42"})
    assert [seen.headers["idempotency-key"] for seen in server.seen] == ["order-42"] * 3
    assert answer.call.key == "order-42" and answer.call.attempts == 3


@fast
@pytest.mark.parametrize(
    "status, headers",
    [
        (400, {}),
        (422, {}),
        (404, {}),
        (409, {}),  # a conflict without Retry-After is not "in progress"
        (400, {"Retry-After": "1"}),
        (422, {"Retry-After": "1"}),
    ],
)
def test_client_errors_are_answers_not_retried(
    client: tuple[str, Send], status: int, headers: dict[str, str]
) -> None:
    _, send = client
    with scripted((status, headers)) as server:
        answer = send(server.url, quick())
    assert answer.status == status
    assert len(server.seen) == 1 and answer.call.attempts == 1


@fast
def test_a_replayed_server_error_is_the_answer(client: tuple[str, Send]) -> None:
    """A 5xx the server stored (it replays it) would only come back: no retry."""
    _, send = client
    with scripted((500, {"Idempotent-Replayed": "true"})) as server:
        answer = send(server.url, quick())
    assert answer.status == 500 and answer.call.replayed
    assert len(server.seen) == 1


@fast
def test_409_in_progress_waits_as_told_then_succeeds(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted((409, {"Retry-After": "1"})) as server:
        # The backoff alone would come back at once: only Retry-After makes it wait.
        answer = send(server.url, quick())
    assert answer.status == 201 and answer.call.attempts == 2
    first, second = server.seen
    assert second.at - first.at >= 1.0


@fast
def test_retry_after_as_an_http_date_is_waited_for() -> None:
    """The rule is the policy's, shared by every client: one client shows it."""
    # An HTTP-date has whole seconds: three ahead is at least two from now.
    told = email.utils.formatdate(time.time() + 3, usegmt=True)
    with scripted((503, {"Retry-After": told})) as server:
        answer = DRIVERS["httpx"](server.url, quick())
    assert answer.status == 201
    first, second = server.seen
    assert second.at - first.at >= 1.0


@fast
def test_an_unreadable_retry_after_is_no_retry_after(client: tuple[str, Send]) -> None:
    """A 503 is retried after backoff; a 409 whose Retry-After cannot be read does not say
    "in progress": it is the answer."""
    _, send = client
    with scripted((503, {"Retry-After": "soon"}), (409, {"Retry-After": "\u00b2"})) as server:
        answer = send(server.url, quick())
    assert answer.status == 409 and answer.call.attempts == len(server.seen) == 2


@fast
def test_a_deadline_shorter_than_retry_after_gives_up_with_the_key(
    client: tuple[str, Send],
) -> None:
    name, send = client
    with (
        scripted((409, {"Retry-After": "30"})) as server,
        pytest.raises(RetriesExhausted) as raised,
    ):
        send(server.url, quick(deadline=1))
    error = raised.value
    assert isinstance(error, LIBRARY_ERRORS[name])
    assert len(server.seen) == 1
    assert server.seen[0].headers["idempotency-key"] == f'"{error.key}"'
    assert error.key in str(error) and "deadline" in str(error)
    assert error.status == 409 and error.attempts == 1


@fast
def test_the_deadline_cuts_an_attempts_own_timeout(client: tuple[str, Send]) -> None:
    """A server that never answers, a read timeout far longer than the deadline: the
    attempt ends at the deadline (were it not cut, the call would hang until the server
    is shut down, after the call)."""
    _, send = client
    with scripted(HANG) as server, pytest.raises(RetriesExhausted) as raised:
        send(server.url, quick(deadline=1), read_timeout=3600)
    assert raised.value.status is None and raised.value.attempts == 1
    assert len(server.seen) == 1


@fast
def test_out_of_attempts_gives_up_with_the_last_answer(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted(*[(503, {})] * 5) as server, pytest.raises(RetriesExhausted) as raised:
        send(server.url, quick(max_attempts=3))
    error = raised.value
    assert len(server.seen) == 3 and error.attempts == 3
    assert error.status == 503 and json.loads(error.response.content)["n"] == 3
    assert "3 attempts" in str(error) and error.key in str(error)


@fast
def test_a_connection_dropped_before_the_answer_is_retried(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted(DROP, DROP) as server:
        answer = send(server.url, quick())
    assert answer.status == 201 and answer.call.attempts == 3
    assert len({seen.headers["idempotency-key"] for seen in server.seen}) == 1


@fast
def test_a_refused_connection_gives_up_with_its_error(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted() as server:
        url = server.url  # nothing listens there once the server is gone
    with pytest.raises(RetriesExhausted) as raised:
        send(url, quick(max_attempts=2))
    assert raised.value.attempts == 2 and raised.value.status is None
    assert raised.value.__cause__ is not None


@fast
def test_unprotected_methods_are_sent_once_without_a_key(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted((503, {})) as server:
        answer = send(server.url, quick(), method="PUT")
    assert answer.status == 503 and answer.info is None
    assert len(server.seen) == 1 and "idempotency-key" not in server.seen[0].headers


@fast
def test_a_streamed_body_is_sent_whole_on_every_attempt(client: tuple[str, Send]) -> None:
    _, send = client
    with scripted((503, {})) as server:
        answer = send(server.url, quick(), body=iter([b'{"amount": ', b"100}"]))
    assert answer.status == 201
    assert [seen.body for seen in server.seen] == [b'{"amount": 100}'] * 2


@fast
def test_the_options_name_the_header_and_the_statuses(client: tuple[str, Send]) -> None:
    """Interoperability: another key header, another set of retried statuses, and a
    server that says itself whether to retry (Stripe's ``Stripe-Should-Retry``)."""
    _, send = client
    policy = quick(
        header="X-Request-Key",
        retry_statuses={429, 503},
        should_retry_header="Stripe-Should-Retry",
        quote_key=False,
    )
    script = [
        (429, {"Retry-After": "0"}),
        (409, {"Stripe-Should-Retry": "true"}),
        (503, {"Stripe-Should-Retry": "false"}),
    ]
    with scripted(*script) as server:
        answer = send(server.url, policy)
    assert answer.status == 503 and answer.call.attempts == 3
    keys = {seen.headers.get("x-request-key") for seen in server.seen}
    assert keys == {answer.call.key} and "idempotency-key" not in server.seen[0].headers
    with scripted((500, {})) as server:
        answer = send(server.url, policy)  # 500 is not in this policy's statuses
    assert answer.status == 500 and len(server.seen) == 1


@fast
@pytest.mark.parametrize(
    "options, named",
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"deadline": -1}, "deadline"),
        ({"backoff": 2, "max_backoff": 1}, "max_backoff"),
        ({"retry_statuses": {422, 503}}, "retry_statuses"),
        ({"retry_statuses": {200}}, "retry_statuses"),
        ({"retry_statuses": "503"}, "retry_statuses"),
        ({"methods": ["POST", "FETCH"]}, "methods"),
        ({"header": ""}, "header"),
        ({"quote_key": "yes"}, "quote_key"),
        ({"new_key": "uuid4"}, "new_key"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidOption, match=rf"RetryPolicy\({named}=\.\.\.\)"):
        RetryPolicy(**options)


@fast
def test_a_minted_key_that_is_no_key_is_refused_before_sending(client: tuple[str, Send]) -> None:
    _, send = client
    with (
        scripted() as server,
        pytest.raises(InvalidOption, match=r"RetryPolicy\(new_key=\.\.\.\)"),
    ):
        send(server.url, RetryPolicy(new_key=lambda: "two words"))
    assert server.seen == []


@fast
def test_the_client_needs_no_django_settings_and_imports_only_its_library() -> None:
    """In a fresh interpreter without DJANGO_SETTINGS_MODULE: an httpx call works and
    requests is never imported; a requests call works and httpx is never imported."""
    program = """
import sys
from django_idempotency.client import {name}, call_info
{call}
assert call_info(response).attempts == 2, call_info(response)
assert {other!r} not in sys.modules, "imported " + {other!r}
"""
    calls = {
        "httpx": (
            "IdempotentTransport",
            "response = __import__('httpx').Client(transport=IdempotentTransport()).post(URL)",
            "requests",
        ),
        "requests": ("IdempotentSession", "response = IdempotentSession().post(URL)", "httpx"),
    }
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    for name, call, other in calls.values():
        with scripted((503, {"Retry-After": "0"})) as server:
            code = f"URL = {server.url!r}\n" + program.format(name=name, call=call, other=other)
            subprocess.run([sys.executable, "-c", code], env=env, cwd="/", check=True)


# -- against gunicorn serving the middleware ----------------------------------------------

served = pytest.mark.slow

#: The server's LOCK_TTL (seconds): its 409s say Retry-After 1 or 2 (the lease left).
LOCK_TTL = 2
#: gunicorn's sync workers: enough for a held view, the duplicates that wait on it and
#: the test's own requests at once.
WORKERS = 8
#: Any one logical call of these tests, retries included.
CALL_TIMEOUT = 120


@pytest.fixture(scope="module")
def gunicorn(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """gunicorn (sync workers) serving the test project on the session's Redis, every
    worker warmed up; its port."""
    # The client's views touch no database: the file need not exist.
    db = tmp_path_factory.mktemp("client") / "db.sqlite3"
    env = server_env(redis_server.url, db, TEST_LOCK_TTL=str(LOCK_TTL))
    with serve_process("gunicorn", env, workers=WORKERS) as (port, _):
        warm_up(port)
        yield port


def warm_up(port: int) -> None:
    """Have every worker load the views (see ``client_views.counted``), so a view starts
    at once whichever worker takes a request."""
    url = f"http://127.0.0.1:{port}/client/counted/?tag=warm-{uuid.uuid4().hex}&workers={WORKERS}"
    with ThreadPoolExecutor(WORKERS) as pool:
        pids = {
            r.json()["pid"] for r in pool.map(lambda _: httpx.get(url, timeout=90), range(WORKERS))
        }
    assert len(pids) == WORKERS


@pytest.fixture
def control(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """Where the test reads what the views recorded, and opens their gates."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def runs(control: redis.Redis, tag: str) -> list[dict[str, Any]]:
    """The executions the view recorded for ``tag``."""
    return [json.loads(entry) for entry in control.lrange(RUNS.format(tag=tag), 0, -1)]


def view_started(control: redis.Redis, tag: str) -> None:
    """Block until the view for ``tag`` has recorded an execution."""
    wait_for_item(control, RUNS.format(tag=tag), 60)


def open_gate(control: redis.Redis, tag: str) -> None:
    control.rpush(GATE.format(tag=tag), "open")


def retrying(**options: Any) -> RetryPolicy:
    """A policy that keeps trying for as long as a test could need."""
    return quick(**{"max_attempts": 100, "deadline": CALL_TIMEOUT, **options})


def waited_as_told(connections: list[Connection]) -> None:
    """After every 409 with Retry-After, the next attempt came no sooner than it said."""
    for answered, following in itertools.pairwise(connections):
        if answered.status == 409:
            told = float(answered.header("Retry-After", response=True) or "nan")
            assert answered.replied is not None
            assert following.arrived - answered.replied >= told


@served
def test_a_read_timeout_shorter_than_the_view_gets_the_first_executions_replay(
    client: tuple[str, Send], gunicorn: int, control: redis.Redis
) -> None:
    _, send = client
    tag = uuid.uuid4().hex
    with Proxy(gunicorn) as proxy, ThreadPoolExecutor(1) as pool:
        url = f"{proxy.url}/client/counted/?tag={tag}&gate=1"
        call = pool.submit(send, url, retrying(), body=b'{"amount": 100}', read_timeout=1.0)
        view_started(control, tag)
        # A second attempt arrived: the first timed out while the view runs (held).
        proxy.wait_for(lambda seen: len(seen) >= 2)
        open_gate(control, tag)
        answer = call.result(CALL_TIMEOUT)
    first = proxy.connections[0]
    assert first.client_left is not None and first.replied is not None
    assert first.client_left < first.replied  # the client gave up before the view answered
    assert answer.status == 201 and answer.call.replayed
    assert answer.call.attempts == len(proxy.connections) >= 2
    # One execution; its answer (which the first attempt never read) is what came back.
    (run,) = runs(control, tag)
    assert json.loads(answer.body)["token"] == json.loads(first.body)["token"]
    sent = {c.header("Idempotency-Key") for c in proxy.connections}
    assert sent == {run["key"]} == {f'"{answer.call.key}"'}


@served
def test_an_answer_lost_by_the_network_is_replayed_to_the_retry(
    client: tuple[str, Send], gunicorn: int, control: redis.Redis
) -> None:
    _, send = client
    tag = uuid.uuid4().hex
    with Proxy(gunicorn, drop=1) as proxy:
        answer = send(f"{proxy.url}/client/counted/?tag={tag}", retrying())
    lost, retry = proxy.connections
    assert lost.dropped and lost.finished and lost.status == 201  # it ran; nobody heard
    assert answer.status == 201 and answer.call.replayed and answer.call.attempts == 2
    assert answer.body == lost.body
    (run,) = runs(control, tag)
    assert {lost.header("Idempotency-Key"), retry.header("Idempotency-Key")} == {run["key"]}


def _first_request(port: int, path: str, key: str, body: bytes = b"{}") -> httpx.Response:
    """The request a retrying client's call duplicates, sent straight to the server."""
    return httpx.post(
        f"http://127.0.0.1:{port}{path}", content=body, headers={"Idempotency-Key": key}, timeout=60
    )


def held_first_request(
    pool: ThreadPoolExecutor, gunicorn: int, control: redis.Redis
) -> tuple[str, str, str, Future[httpx.Response]]:
    """A request with a new key sent straight to the server, once its view runs, held at
    its gate (a duplicate is told 409 in progress): (tag, key, path, its response)."""
    tag, key = uuid.uuid4().hex, f"order-{uuid.uuid4()}"
    path = f"/client/counted-reject/?tag={tag}&gate=1"
    first = pool.submit(_first_request, gunicorn, path, key)
    view_started(control, tag)
    return tag, key, path, first


@served
def test_in_progress_409_is_waited_out_as_told_then_replayed(
    client: tuple[str, Send], gunicorn: int, control: redis.Redis
) -> None:
    _, send = client
    with Proxy(gunicorn) as proxy, ThreadPoolExecutor(2) as pool:
        tag, key, path, first = held_first_request(pool, gunicorn, control)
        call = pool.submit(send, proxy.url + path, retrying(), headers={"Idempotency-Key": key})
        # The duplicate was told 409: let the first request finish while it waits.
        proxy.wait_for(lambda seen: bool(seen) and seen[0].replied is not None)
        open_gate(control, tag)
        answer = call.result(CALL_TIMEOUT)
        original = first.result(CALL_TIMEOUT)
    told = proxy.connections[0]
    assert told.status == 409 and told.header("Retry-After", response=True)
    waited_as_told(proxy.connections)
    assert answer.status == 201 and answer.call.replayed and answer.call.key == key
    assert answer.call.attempts == len(proxy.connections) >= 2
    assert json.loads(answer.body)["token"] == original.json()["token"]
    assert len(runs(control, tag)) == 1


@served
def test_a_deadline_shorter_than_the_servers_retry_after_gives_up_with_the_key(
    client: tuple[str, Send], gunicorn: int, control: redis.Redis
) -> None:
    name, send = client
    with Proxy(gunicorn) as proxy, ThreadPoolExecutor(1) as pool:
        tag, key, path, first = held_first_request(pool, gunicorn, control)
        try:
            with pytest.raises(RetriesExhausted) as raised:
                send(proxy.url + path, retrying(deadline=0.5), headers={"Idempotency-Key": key})
        finally:
            open_gate(control, tag)
        assert first.result(CALL_TIMEOUT).status_code == 201
    error = raised.value
    (told,) = proxy.connections
    assert float(told.header("Retry-After", response=True) or 0) > 0.5
    assert isinstance(error, LIBRARY_ERRORS[name])
    assert error.key == key and key in str(error) and error.status == 409
    assert len(runs(control, tag)) == 1


@served
def test_a_reused_key_422_and_a_bad_key_400_are_not_retried(
    client: tuple[str, Send], gunicorn: int, control: redis.Redis
) -> None:
    _, send = client
    tag, key = uuid.uuid4().hex, f"order-{uuid.uuid4()}"
    path = f"/client/counted/?tag={tag}"
    assert _first_request(gunicorn, path, key, b'{"amount": 100}').status_code == 201
    with Proxy(gunicorn) as proxy:
        # The same key with another body: the server refuses it, and would every time.
        mismatch = send(proxy.url + path, retrying(), headers={"Idempotency-Key": key}, body=b"{}")
        # A key longer than the server's MAX_KEY_LENGTH (255).
        too_long = send(proxy.url + path, retrying(), headers={"Idempotency-Key": "k" * 300})
    assert mismatch.status == 422 and too_long.status == 400
    assert (
        mismatch.headers["content-type"]
        == too_long.headers["content-type"]
        == ("application/problem+json")
    )
    assert len(proxy.connections) == 2
    assert mismatch.call.attempts == too_long.call.attempts == 1
    assert len(runs(control, tag)) == 1
