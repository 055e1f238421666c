"""Functions run in child processes by the concurrency tests (importable by ``spawn``)."""

from __future__ import annotations

import os
import time
from typing import Any


def _setup(redis_url: str, lock_ttl: float) -> Any:
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.IDEMPOTENCY = {"REDIS": redis_url, "LOCK_TTL": lock_ttl, "WAIT_TIMEOUT": 10}
    import redis

    return redis.Redis.from_url(redis_url)


def run_counted(redis_url: str, key: str, counter: str, sleep: float, barrier: Any) -> Any:
    """Call run(key) whose action counts itself in Redis; return what run() returned."""
    client = _setup(redis_url, lock_ttl=5)
    from django_idempotency import run

    def action() -> dict[str, Any]:
        client.incr(counter)
        time.sleep(sleep)
        return {"pid": os.getpid(), "n": 1}

    barrier.wait()
    return run(key, action)


def run_forever(redis_url: str, key: str, started: str, lock_ttl: float) -> None:
    """Claim ``key`` and hang inside the action (the test SIGKILLs this process)."""
    client = _setup(redis_url, lock_ttl=lock_ttl)
    from django_idempotency import run

    def action() -> None:
        client.set(started, os.getpid())
        time.sleep(3600)

    run(key, action)


def run_after_go(
    redis_url: str, key: str, go: str, took_over: str, lock_ttl: float, wait_timeout: float
) -> None:
    """Set up, say ``ready`` in ``go``, and call run(key) once ``go`` says ``go``.

    The engine is built by that call, so this is a process that has never waited.
    """
    client = _setup(redis_url, lock_ttl=lock_ttl)
    from django_idempotency import run

    client.set(go, "ready")
    while client.get(go) != b"go":
        time.sleep(0.01)

    def action() -> str:
        client.set(took_over, repr(time.time()))
        return "took over"

    assert run(key, action, lock_ttl=lock_ttl, wait_timeout=wait_timeout) == "took over"
