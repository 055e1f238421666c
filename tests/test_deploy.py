"""The deployment matrix: three promises kept under every server the package supports.

Each configuration of tests/support/deploy.py is started once, for real, on a free port
of 127.0.0.1 and on the session's Redis, and must keep:

(a) 40 duplicates sent at once run the view once, and all 40 get its response;
(b) a view that runs longer than ``LOCK_TTL`` keeps its claim (its lease is renewed):
    a duplicate sent after the lease would have lapsed gets the response replayed;
(c) a worker SIGKILLed mid-request loses its claim when its lease ends: the retry runs
    the view again, no later than ``LOCK_TTL + TAKEOVER_MARGIN`` after the kill.

uWSGI forks its workers from C, where Python's at-fork hooks never run: two workers once
shared their fencing tokens and 40 duplicates ran the view twice. Without
``enable-threads`` (or ``threads``) uWSGI runs no Python thread, so no lease could be
renewed: the app must refuse to load there.

Executions are counted in Redis by the views (tests/support/views.py ``deploy_*``),
whichever server process ran them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import redis

from django_idempotency.testing import RedisServer

from .support.deploy import (
    CONFIGS,
    UWSGI_NO_THREADS,
    UWSGI_NO_THREADS_NEED_APP,
    Reply,
    Server,
    answers,
    finished,
    gone,
    post,
    starts,
)
from .support.servers import eventually, server_env

pytestmark = [pytest.mark.slow, pytest.mark.core]

#: The servers' LOCK_TTL (seconds, ``TEST_LOCK_TTL``): short, so leases end soon.
LOCK_TTL = 2.0
#: (a) How many duplicates are sent at once, and how long their view runs (long enough
#: for all of them to arrive while it runs).
DUPLICATES = 40
DUPLICATE_VIEW = 1.0
#: (b) How long the view runs: well past its first lease.
LONG_VIEW = 2.5 * LOCK_TTL
#: (b) How long past LOCK_TTL after the view started the duplicate is sent: its claim
#: was taken before the view started, so by then an unrenewed lease has lapsed.
PAST_THE_LEASE = 0.5
#: (c) How long the killed request's view would have run.
KILLED_VIEW = 60.0
#: (c) The retry runs the view no later than LOCK_TTL + this after the kill: the lease
#: lapses at most LOCK_TTL after the kill (it was renewed at most then); the rest covers
#: the retry's way in on a loaded 2-core machine (for a server that died with its worker,
#: starting it again: ~1-2 s) and its claim's round trips.
TAKEOVER_MARGIN = 3.0
#: Any one HTTP request of the matrix (the duplicates wait at most WAIT_TIMEOUT, 10 s).
REQUEST_TIMEOUT = 30.0


class Call:
    """``fn()`` in a thread of its own; :meth:`outcome` is what it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._outcome: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = self._fn()
        except BaseException as error:  # reported by outcome()
            self._outcome = error

    def outcome(self, timeout: float) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self._fn} still running after {timeout} s"
        return self._outcome


def at_once(calls: list[Callable[[], Reply]], timeout: float = 60) -> list[Reply]:
    """Run every call from a thread of its own, released together by a barrier; return
    their replies in order (raising the first error)."""
    barrier = threading.Barrier(len(calls))

    def released(fn: Callable[[], Reply]) -> Callable[[], Reply]:
        def run() -> Reply:
            barrier.wait(timeout)
            return fn()

        return run

    running = [Call(released(fn)) for fn in calls]
    deadline = time.monotonic() + timeout
    outcomes = [call.outcome(max(0.0, deadline - time.monotonic())) for call in running]
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


@pytest.fixture(scope="module")
def control(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """Where the test reads what the views recorded."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def environment(redis_server: RedisServer, directory: Any) -> dict[str, str]:
    # The views of the matrix touch no database: the file need not exist.
    return server_env(redis_server.url, directory / "db.sqlite3", TEST_LOCK_TTL=str(LOCK_TTL))


@pytest.fixture(scope="module", params=CONFIGS, ids=[config.name for config in CONFIGS])
def server(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """The configuration, started once for its three promises."""
    reason = request.param.skip()
    if reason is not None:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp(request.param.name)
    running = Server(request.param, environment(redis_server, directory), directory / "log")
    try:
        running.start()
        yield running
    finally:
        running.stop()


# (a) is first: on uWSGI it must be the first claim each forked worker makes, as it was
# when two workers drew the same fencing token.
def test_duplicates_sent_at_once_run_the_view_once(server: Server, control: Any) -> None:
    for path in server.config.paths:
        key = str(uuid.uuid4())
        send = partial(post, server.port, path, key, DUPLICATE_VIEW, REQUEST_TIMEOUT)
        replies = at_once([send] * DUPLICATES)
        runs = starts(control, key)
        assert len(runs) == 1, (path, runs, server.log())
        assert [reply.status for reply in replies] == [201] * DUPLICATES, (path, server.log())
        assert len({reply.body for reply in replies}) == 1, path
        assert sum(not reply.replayed for reply in replies) == 1, path


def test_a_view_running_past_its_lease_keeps_its_claim(server: Server, control: Any) -> None:
    # Under ASGI the sync and the async view run at once, each on a key of its own.
    keys = {path: str(uuid.uuid4()) for path in server.config.paths}
    firsts = {
        path: Call(partial(post, server.port, path, key, LONG_VIEW, REQUEST_TIMEOUT))
        for path, key in keys.items()
    }
    started = [
        eventually(partial(starts, control, key), REQUEST_TIMEOUT, f"{path} to start")[0]
        for path, key in keys.items()
    ]
    lapsed = max(run["at"] for run in started) + LOCK_TTL + PAST_THE_LEASE
    eventually(lambda: time.monotonic() > lapsed, LONG_VIEW, "an unrenewed lease to lapse")
    # Meaningful only while the views still run (they run LONG_VIEW, the duplicates
    # are sent LOCK_TTL + PAST_THE_LEASE after they started).
    assert [finished(control, key) for key in keys.values()] == [0] * len(keys)
    duplicates = at_once(
        [partial(post, server.port, path, key, 0, REQUEST_TIMEOUT) for path, key in keys.items()]
    )
    for (path, key), duplicate in zip(keys.items(), duplicates, strict=True):
        first = firsts[path].outcome(REQUEST_TIMEOUT)
        assert isinstance(first, Reply), first
        assert first.status == 201 and not first.replayed, (path, first, server.log())
        assert len(starts(control, key)) == 1, (path, starts(control, key), server.log())
        assert duplicate.status == 201 and duplicate.replayed, (path, duplicate)
        assert duplicate.body == first.body, path


def test_a_killed_worker_is_taken_over_once_its_lease_ends(server: Server, control: Any) -> None:
    path, key = server.config.paths[0], str(uuid.uuid4())
    doomed = Call(partial(post, server.port, path, key, KILLED_VIEW, KILLED_VIEW + REQUEST_TIMEOUT))
    victim = eventually(lambda: starts(control, key), REQUEST_TIMEOUT, "the view to start")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    eventually(lambda: gone(victim["pid"]), 10, "the worker to die")
    # Its request was never answered (its connection died with it).
    lost = doomed.outcome(REQUEST_TIMEOUT)
    assert not (isinstance(lost, Reply) and lost.status == 201), lost
    if server.config.dies_with_a_worker:
        server.wait_exit(REQUEST_TIMEOUT)
        server.restart()  # the retry needs a server: the same Redis, a new process
    retry = post(server.port, path, key, 0, REQUEST_TIMEOUT)
    assert server.alive(), server.log()
    assert retry.status == 201 and not retry.replayed, (retry, server.log())
    runs = starts(control, key)
    assert len(runs) == 2 and runs[1]["pid"] != victim["pid"], runs
    took = runs[1]["at"] - killed_at
    assert took <= LOCK_TTL + TAKEOVER_MARGIN, f"taken over {took:.2f} s after the kill"
    again = post(server.port, path, key, 0, REQUEST_TIMEOUT)
    assert again.status == 201 and again.replayed and again.body == retry.body, again
    assert len(starts(control, key)) == 2


def test_uwsgi_without_threads_refuses_to_load(
    redis_server: RedisServer, control: Any, tmp_path: Any
) -> None:
    env = environment(redis_server, tmp_path)
    # Without --need-app uWSGI stays up with no app: every request gets its 500.
    refused = Server(UWSGI_NO_THREADS, env, tmp_path / "no-threads.log")
    try:
        refused.start(
            ready=lambda s: "enable-threads = true" in s.output() and answers(s.port) is not None
        )
        key = str(uuid.uuid4())
        try:
            reply: Reply | OSError = post(refused.port, "/deploy/", key, 0, REQUEST_TIMEOUT)
        except OSError as error:  # it may answer before reading the body, and reset
            reply = error
        assert not (isinstance(reply, Reply) and reply.status == 201), reply
        # It got there, and uWSGI, with no app to call, answered it with a 500.
        logged = eventually(
            lambda: [line for line in refused.output().splitlines() if "POST /deploy/ =>" in line],
            10,
            "uWSGI to log the request",
        )
        assert "(HTTP/1.1 500)" in logged[0], logged
        assert starts(control, key) == []
        assert "ImproperlyConfigured" in refused.output()
    finally:
        refused.stop()
    # With --need-app it gives up at once.
    gave_up = Server(UWSGI_NO_THREADS_NEED_APP, env, tmp_path / "need-app.log")
    try:
        gave_up.start(ready=lambda s: not s.alive())
        assert gave_up.wait_exit(REQUEST_TIMEOUT) != 0
        assert "enable-threads = true" in gave_up.output()
    finally:
        gave_up.stop()
