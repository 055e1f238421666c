"""The webhook's background work: settle the charge an event names, once per job.

The receiver enqueues it with ``task_id=request_key("settle")``: a stable id derived
from the event's Idempotency-Key. A receiver run again after a crash enqueues the same
id, and a message the broker delivers twice (a lost acknowledgement, a worker killed
under ``acks_late``) carries it too; ``IdempotentTask`` runs the body once per id.
"""

from __future__ import annotations

import os
from typing import Any

from celery import shared_task
from celery.signals import task_postrun
from payments.models import Charge

from django_idempotency.celery import IdempotentTask

from .models import JobDelivery, JobRun


@task_postrun.connect
def _count_delivery(task_id: str = "", task: Any = None, **_: Any) -> None:
    """Every message the worker finished, replayed or run (so the demo can count them)."""
    if getattr(task, "name", "") == settle_event.name:
        JobDelivery.objects.create(task_id=task_id)


@shared_task(base=IdempotentTask, bind=True, idempotency_ttl=24 * 60 * 60)
def settle_event(self: Any, event_id: str, reference: str) -> dict[str, Any]:
    """Mark the charge ``reference`` settled; the side effect the demo counts."""
    settled = Charge.objects.filter(gateway_reference=reference).update(status="settled")
    JobRun.objects.create(event_id=event_id, task_id=self.request.id, pid=os.getpid())
    return {"event": event_id, "charges_settled": settled}
