"""Exactly-once under real multi-process servers, against real Redis."""

from __future__ import annotations

import http.client
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from .support.servers import migrate, serve, server_env

pytestmark = [pytest.mark.slow, pytest.mark.matrix, pytest.mark.core]


def fire(port: int, path: str, key: str, n: int) -> list[tuple[int, bytes, str | None]]:
    """Send ``n`` identical POSTs at once; return (status, body, replay header) each."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        conn.request(
            "POST",
            path,
            body=b'{"amount": 10}',
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        results[i] = (response.status, response.read(), response.getheader("Idempotent-Replayed"))
        conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def executions(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM tests_execution").fetchone()[0])


def assert_exactly_once(results: list[tuple[int, bytes, str | None]], db_path: Path) -> None:
    assert executions(db_path) == 1
    assert {status for status, _, _ in results} == {201}
    assert len({body for _, body, _ in results}) == 1
    assert sum(replayed == "true" for _, _, replayed in results) == len(results) - 1


@pytest.mark.parametrize("path", ["/db/?sleep=0.3"])
def test_gunicorn_4_workers_50_concurrent_duplicates_run_once(redis_url, tmp_path, path):
    env = server_env(redis_url, tmp_path / "db.sqlite3")
    migrate(env)
    with serve("gunicorn", env, workers=4) as port:
        results = fire(port, path, str(uuid.uuid4()), 50)
    assert_exactly_once(results, tmp_path / "db.sqlite3")


@pytest.mark.parametrize("path", ["/async-plain/?sleep=0.3", "/async-decorated/?sleep=0.3"])
def test_uvicorn_async_views_50_concurrent_duplicates_run_once(redis_url, tmp_path, path):
    env = server_env(redis_url, tmp_path / "db.sqlite3")
    migrate(env)
    with serve("uvicorn", env, workers=2) as port:
        results = fire(port, path, str(uuid.uuid4()), 50)
    assert_exactly_once(results, tmp_path / "db.sqlite3")
