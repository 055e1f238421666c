"""django-idempotency: make any Django endpoint or Python function safe to retry.

Public names are listed in ``__all__``; the doors live in their own modules:
``django_idempotency.middleware.IdempotencyMiddleware`` and
``django_idempotency.drf.IdempotentMixin`` (imports DRF).
"""

from .api import arun, run
from .decorators import idempotency_exempt, idempotent_view
from .exceptions import (
    FingerprintMismatch,
    IdempotencyError,
    IdempotencyTimeout,
    IdempotencyUnavailable,
    InvalidKey,
    KeyRequired,
    NotReplayable,
    ReplayedError,
    RequestInProgress,
    ResultNotStored,
)

__version__ = "0.1.0"

__all__ = [
    "FingerprintMismatch",
    "IdempotencyError",
    "IdempotencyTimeout",
    "IdempotencyUnavailable",
    "InvalidKey",
    "KeyRequired",
    "NotReplayable",
    "ReplayedError",
    "RequestInProgress",
    "ResultNotStored",
    "arun",
    "idempotency_exempt",
    "idempotent_view",
    "run",
]
