"""Django Tasks (Django 6.0+): ``from django_idempotency.tasks import idempotent``."""

from .doors.tasks import idempotent

__all__ = ["idempotent"]
