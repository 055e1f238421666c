"""Celery: ``from django_idempotency.celery import IdempotentTask`` (needs the ``celery`` extra)."""

from .doors.celery import NOT_OUTCOMES, IdempotentTask

__all__ = ["NOT_OUTCOMES", "IdempotentTask"]
