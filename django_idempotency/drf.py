"""``django_idempotency.drf.IdempotentMixin``, the documented path (imports DRF).

The door itself lives in :mod:`django_idempotency.doors.drf`.
"""

from .doors.drf import IdempotencyAPIException, IdempotentMixin

__all__ = ["IdempotencyAPIException", "IdempotentMixin"]
