"""``django_idempotency.middleware.IdempotencyMiddleware``, the path settings name.

The door itself lives in :mod:`django_idempotency.doors.middleware`.
"""

from .doors.middleware import IdempotencyMiddleware

__all__ = ["IdempotencyMiddleware"]
