"""Django Tasks for the suite (Django 6.0+ only: this module imports ``django.tasks``)."""

from __future__ import annotations

from typing import Any

from django.tasks import task

from django_idempotency.tasks import idempotent

#: What the task bodies did, in order: (task, argument).
ran: list[tuple[str, Any]] = []


@idempotent(key=lambda order: f"order:{order}")
@task
def charge(order: int) -> dict[str, Any]:
    """Keyed by the order: enqueued twice, it charges once."""
    ran.append(("charge", order))
    return {"order": order, "run": len(ran)}


@idempotent(key=lambda order: f"order:{order}")
@task
def decline(order: int) -> None:
    """Fails; the failure is the outcome, replayed to every later run."""
    ran.append(("decline", order))
    raise ValueError(f"card declined for order {order} (run {len(ran)})")


@idempotent(ttl=3600)
@task
def by_result_id(label: str) -> dict[str, Any]:
    """Keyed by the task result's id (the default)."""
    ran.append(("by_result_id", label))
    return {"label": label, "run": len(ran)}


@idempotent
@task(takes_context=True)
def with_context(context: Any, label: str) -> dict[str, Any]:
    """Asked for its context itself: it still gets it."""
    ran.append(("with_context", label))
    return {"label": label, "result_id": context.task_result.id}


@idempotent(key=lambda label: f"async:{label}")
@task
async def acharge(label: str) -> dict[str, Any]:
    """An async task: the door awaits it under ``arun``."""
    ran.append(("acharge", label))
    return {"label": label, "run": len(ran)}
