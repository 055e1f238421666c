"""A plain Django Task (Django 6.0+): the scope tests put it behind ``@idempotent`` themselves."""

from __future__ import annotations

from django.tasks import task

#: The orders the task body charged, in order.
ran: list[int] = []


@task
def charge(order: int) -> dict[str, int]:
    """Charge ``order`` (a Task defined at module level, as Django requires)."""
    ran.append(order)
    return {"order": order}
