"""Celery tasks for the suite: each counts its deliveries and its runs in Redis db 3.

A *delivery* is the worker handing the task a message (counted by ``task_prerun``);
a *run* is the task body executing. Idempotency shows as runs < deliveries.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Task
from celery.signals import task_prerun

from django_idempotency.celery import IdempotentTask

from .celery_app import app, with_db


def side_effects() -> redis.Redis:
    """The Redis database where the jobs write what they did."""
    return redis.Redis.from_url(with_db(app.conf.broker_url, 3))


@task_prerun.connect
def _count_delivery(task: Task | None = None, args: Any = (), **_: Any) -> None:
    if args:
        side_effects().incr(f"deliveries:{args[0]}")


def _ran(label: str) -> int:
    client = side_effects()
    client.rpush(f"starts:{label}", f"{time.time()} {os.getpid()}")
    return int(client.incr(f"runs:{label}"))


@app.task(base=IdempotentTask)
def record(label: str, sleep: float = 0.0) -> dict[str, Any]:
    """Count a run, optionally take ``sleep`` seconds, return what run this was."""
    n = _ran(label)
    time.sleep(sleep)
    return {"label": label, "run": n, "pid": os.getpid()}


@app.task(base=IdempotentTask, idempotency_key=lambda label, order: f"order:{order}")
def charge(label: str, order: int) -> dict[str, Any]:
    """Keyed by the order, not the task id: two messages for one order charge once."""
    return {"order": order, "run": _ran(label), "pid": os.getpid()}


@app.task(base=IdempotentTask, idempotency_key=lambda label, order: f"order:{order}")
def refuse(label: str, order: int) -> None:
    """Fails the same way every time it runs; the failure is the outcome."""
    n = _ran(label)
    raise ValueError(f"card declined for order {order} (run {n})")


@app.task(base=IdempotentTask, bind=True)
def flaky(self: Task, label: str) -> int:
    """Asks to be retried on its first run; ``retry()`` is not an outcome."""
    n = _ran(label)
    if n == 1:
        raise self.retry(countdown=0.1)
    return n


@app.task(
    base=IdempotentTask,
    idempotency_lock_ttl=3,
    idempotency_wait_timeout=1,
)
def long_first_run(label: str) -> int:
    """The first run takes a minute (the test kills it); later runs return at once."""
    n = _ran(label)
    if n == 1:
        time.sleep(60)
    return n


@app.task(
    base=IdempotentTask,
    idempotency_lock_ttl=3,
    idempotency_wait_timeout=1,
    idempotency_outcome_unknown="refuse",
)
def long_first_run_refusing(label: str) -> int:
    """:func:`long_first_run` under the refuse policy: a killed first run is not run again."""
    n = _ran(label)
    if n == 1:
        time.sleep(60)
    return n
