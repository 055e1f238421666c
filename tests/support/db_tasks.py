"""Django Tasks that a django-tasks-db worker runs (Django 6.0+: imports ``django.tasks``).

Each counts what it did in Redis db 3 of ``REDIS_URL``, outside the worker: a *delivery*
is the worker starting the task for a result (``task_started``), a *run* is the body
executing. Idempotency shows as runs < deliveries.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from django.conf import settings
from django.dispatch import receiver
from django.tasks import task
from django.tasks.signals import task_started

from django_idempotency.tasks import idempotent


def side_effects() -> redis.Redis:
    """The Redis database where the tasks write what they did."""
    return redis.Redis.from_url(f"{settings.REDIS_URL.rsplit('/', 1)[0]}/3")


@receiver(task_started)
def _count_delivery(sender: Any, task_result: Any, **_: Any) -> None:
    if task_result.task.module_path.startswith(f"{__name__}.") and task_result.args:
        side_effects().incr(f"deliveries:{task_result.args[0]}")


def _ran(label: str) -> int:
    return int(side_effects().incr(f"runs:{label}"))


@idempotent(ttl=3600)
@task
def record(label: str) -> dict[str, Any]:
    """Keyed by the task result's id (the default): count a run, say which one it was."""
    return {"label": label, "run": _ran(label), "pid": os.getpid()}


@idempotent(key=lambda label, order: f"order:{order}")
@task
def charge(label: str, order: int) -> dict[str, Any]:
    """Keyed by the order: two results for one order charge once."""
    return {"order": order, "run": _ran(label), "pid": os.getpid()}
