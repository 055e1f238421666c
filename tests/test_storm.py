"""Bursts bigger than the Redis connection pool, against real gunicorn and uvicorn servers.

redis-py's pool holds 100 connections by default; before waiting held no connection of
its own, a burst of 120 duplicates in one process got 503s and lost the owner's result.
Here every duplicate of a burst must get the first response, the action must run once
per key, and the number of Redis connections must not depend on the number of waiters:
a process subscribes once (one connection) and coalesces its duplicates locally.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from .support.load import Sampler, burst, threads_of
from .support.servers import eventually, migrate, serve_process, server_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db, pytest.mark.core]

#: Redis connections one server process may hold during a storm of ONE key, however many
#: duplicates wait: the notifier's subscription, the lease keeper's, and the commands in
#: flight (the owner's claim or completion and, at most, a local leader's claim).
ONE_KEY_CONNECTIONS = 6
#: Under ASGI, for many keys at once: the asyncio pool's size (50) plus those above.
ASGI_CONNECTIONS = 50 + ONE_KEY_CONNECTIONS
#: Threads a storm's server may have beyond as many requests without duplicates.
SPARE_THREADS = 10


def executions(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT key, COUNT(*) FROM tests_execution GROUP BY key")
        return {key: count for key, count in rows}


def client_ids(sampler_client: redis.Redis) -> set[int]:
    """The ids of the connections Redis has now."""
    return {int(client["id"]) for client in sampler_client.client_list()}


def app_connections(sampler_client: redis.Redis, baseline: set[int]) -> int:
    """Connections opened since ``baseline`` (ids, so earlier ones closing do not count)."""
    return len(client_ids(sampler_client) - baseline)


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    environment = server_env(
        redis_url, tmp_path / "db.sqlite3", REDIS_CONNECT_TIMEOUT="10", REDIS_SOCKET_TIMEOUT="10"
    )
    migrate(environment)
    return environment


@pytest.fixture
def sampler_client(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url, client_name="sampler")
    yield client
    client.close()


def test_gunicorn_256_threads_250_duplicates_run_once_and_all_get_the_first_response(
    env, tmp_path, sampler_client
):
    baseline = client_ids(sampler_client)
    with serve_process("gunicorn", env, workers=1, threads=256) as (port, _):
        key = str(uuid.uuid4())
        with Sampler(lambda: app_connections(sampler_client, baseline)) as connections:
            replies = burst(port, [("/db/?sleep=1", key)] * 250)
        later = burst(port, [("/db/?sleep=1", key)])[0]
    assert executions(tmp_path / "db.sqlite3") == {key: 1}
    assert {r.status for r in replies} == {201}
    assert len({r.body for r in replies}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in replies) == 249
    assert later.status == 201 and later.body == replies[0].body
    assert later.headers["idempotent-replayed"] == "true"
    assert 1 <= connections.peak <= ONE_KEY_CONNECTIONS, connections.peak


def test_uvicorn_2000_requests_in_flight_over_100_keys_run_each_key_once(
    env, tmp_path, sampler_client
):
    baseline = client_ids(sampler_client)
    with serve_process("uvicorn", env, workers=1) as (port, proc):
        # Django itself runs each ASGI request's synchronous parts (signal receivers, the
        # ORM) in a thread of that request's own, so threads follow requests in flight.
        # 2,000 requests with no duplicate among them show how many that is...
        distinct = [str(uuid.uuid4()) for _ in range(2000)]
        with Sampler(lambda: threads_of(proc.pid)) as threads_distinct:
            alone = burst(port, [("/async-plain/?sleep=1", k) for k in distinct])
        # Its request threads end just after their responses are sent: let them go, so
        # the next burst's peak counts only its own.
        eventually(lambda: threads_of(proc.pid) < 100, what="the first burst's threads to end")
        # ... and 2,000 in which 1,900 wait for another must need no more.
        keys = [str(uuid.uuid4()) for _ in range(100)]
        with (
            Sampler(lambda: threads_of(proc.pid)) as threads_storm,
            Sampler(lambda: app_connections(sampler_client, baseline)) as connections,
        ):
            replies = burst(port, [("/async-plain/?sleep=1", k) for k in keys for _ in range(20)])
    failed = [r.body[:300] for r in alone + replies if r.status != 201]
    assert not failed, (len(failed), failed[:2])
    assert executions(tmp_path / "db.sqlite3") == dict.fromkeys(distinct + keys, 1)
    for i, key in enumerate(keys):
        group = replies[i * 20 : (i + 1) * 20]
        assert len({r.body for r in group}) == 1, key
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in group) == 19
    # Waiting coroutines hold no thread and no connection of their own: 1,900 waiters
    # holding one each would add about 1,900 threads. The slack is for the notifier's
    # thread (started at the first wait) and Django's per-request threads coming and going.
    assert threads_storm.peak <= threads_distinct.peak + SPARE_THREADS, (
        threads_distinct.peak,
        threads_storm.peak,
    )
    assert connections.peak <= ASGI_CONNECTIONS, connections.peak


def test_connections_do_not_grow_with_the_number_of_waiters(env, sampler_client):
    baseline = client_ids(sampler_client)
    peaks = {}
    with serve_process("gunicorn", env, workers=1, threads=256) as (port, _):
        for waiters in (10, 200):
            key = str(uuid.uuid4())
            with Sampler(lambda: app_connections(sampler_client, baseline)) as connections:
                replies = burst(port, [("/db/?sleep=0.5", key)] * waiters)
            assert {r.status for r in replies} == {201}
            peaks[waiters] = connections.peak
    assert peaks[200] <= ONE_KEY_CONNECTIONS and peaks[200] <= peaks[10] + 1, peaks
