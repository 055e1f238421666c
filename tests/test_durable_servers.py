"""Durable mode under real gunicorn workers, on SQLite and on PostgreSQL: a worker killed
after its commit, Redis flushed, a rollback, and concurrent duplicates, each running the
work once."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from .support.servers import eventually, migrate, serve, serve_process, server_env

pytestmark = pytest.mark.slow

REPLAYED = "Idempotent-Replayed"


@dataclass
class Deployment:
    """The environment of a test project on one database, and a way to query it."""

    env: dict[str, str]
    query: Callable[[str], list[tuple[Any, ...]]]

    def executions(self) -> list[str]:
        """The ``pid:key`` of every time the durable work ran."""
        return [row[0] for row in self.query("SELECT key FROM tests_execution")]

    def rows(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM django_idempotency_durablerecord")[0][0])


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[Any]:
    db_path = tmp_path / "db.sqlite3"
    if request.param == "sqlite":
        env = server_env(redis_url, db_path, TEST_LOCK_TTL="2")

        def query(sql: str) -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(db_path)) as conn:
                return list(conn.execute(sql))

    else:
        postgres = request.getfixturevalue("postgres")
        name = request.getfixturevalue("postgres_database")
        env = server_env(
            redis_url,
            db_path,
            TEST_LOCK_TTL="2",
            DJANGO_SETTINGS_MODULE="tests.support.pg_settings",
            **postgres.environ(name),
        )

        def query(sql: str) -> list[tuple[Any, ...]]:
            with postgres.connect(name) as conn:
                return list(conn.execute(sql).fetchall())

    migrate(env)
    yield Deployment(env, query)


def post(
    port: int, path: str, key: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        sent = {"Idempotency-Key": key, "Content-Type": "application/json", **(headers or {})}
        conn.request("POST", path, body=b"{}", headers=sent)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_a_worker_killed_after_its_commit_is_replayed_from_the_database(
    deployment: Deployment, redis_url: str
) -> None:
    key = str(uuid.uuid4())
    control = redis.Redis.from_url(redis_url)
    with serve_process("gunicorn", deployment.env, workers=1) as (port, _master):
        # The view pauses Redis writes and returns; its transaction commits (the work and
        # the row), and the Redis store that follows hangs on the pause: a crash there
        # used to lose the result and run the work again on the retry.
        def killed_request() -> None:
            with contextlib.suppress(OSError):  # the worker dies before it answers
                post(port, "/durable/", key, {"X-Pause-Redis": "10000"})

        first = threading.Thread(target=killed_request, daemon=True)
        first.start()
        ran = eventually(deployment.executions, 30, "the first run's commit")
        eventually(deployment.rows, 30, "the durable row")
        worker = int(ran[0].split(":")[0])
        os.kill(worker, signal.SIGKILL)
        first.join(30)
        control.client_unpause()
        # The killed worker's running record stays until its lease (LOCK_TTL, 2 s) ends:
        # the retry waits it out, claims the key, and finds the committed row.
        status, headers, body = post(port, "/durable/", key)
        assert status == 201
        assert headers.get(REPLAYED) == "true"
        assert json.loads(body)["pid"] == worker  # the killed worker's response
        again = post(port, "/durable/", key)  # written back: now from Redis
    assert again[0] == 201 and again[2] == body and again[1].get(REPLAYED) == "true"
    assert deployment.executions() == ran  # the work ran once
    assert deployment.rows() == 1
    control.close()


@pytest.mark.parametrize("path", ["/durable/", "/durable-drf/"])
def test_redis_flushed_and_a_rollback_on_a_real_server(
    deployment: Deployment, redis_url: str, path: str
) -> None:
    control = redis.Redis.from_url(redis_url)
    key = str(uuid.uuid4())
    with serve("gunicorn", deployment.env, workers=2) as port:
        status, _, body = post(port, path, key)
        assert status == 201
        control.flushall()
        replay_status, headers, replay = post(port, path, key)
        assert (replay_status, replay) == (201, body)
        assert headers.get(REPLAYED) == "true"

        failing = str(uuid.uuid4())
        assert post(port, path + "?fail=1", failing)[0] == 500
        assert deployment.rows() == 1  # the failed view's transaction left no row
        retried = post(port, path, failing)
        assert retried[0] == 201 and REPLAYED not in retried[1]
    assert len(deployment.executions()) == 2  # one per key
    assert deployment.rows() == 2
    control.close()


def test_concurrent_duplicates_of_a_durable_key_run_once(deployment: Deployment) -> None:
    key, start = str(uuid.uuid4()), threading.Barrier(12)
    answers: list[tuple[int, bytes]] = []

    def duplicate() -> None:
        start.wait()
        status, _, body = post(port, "/durable/?sleep=0.5", key)
        answers.append((status, body))

    with serve("gunicorn", deployment.env, workers=4) as port:
        threads = [threading.Thread(target=duplicate) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [status for status, _ in answers] == [201] * 12
    assert len({body for _, body in answers}) == 1
    assert len(deployment.executions()) == 1
    assert deployment.rows() == 1
