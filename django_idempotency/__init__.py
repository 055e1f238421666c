"""django-idempotency: make any Django endpoint or Python function safe to retry.

Public names are listed in ``__all__``. The doors with framework imports live in their
own modules: ``django_idempotency.middleware.IdempotencyMiddleware``,
``django_idempotency.drf.IdempotentMixin`` (DRF), ``django_idempotency.celery``
(Celery) and ``django_idempotency.tasks`` (Django Tasks).
"""

from .api import arun, run
from .doors.decorators import idempotency_exempt, idempotent_view
from .exceptions import (
    FingerprintMismatch,
    IdempotencyError,
    IdempotencyTimeout,
    IdempotencyUnavailable,
    InvalidKey,
    KeyRequired,
    NotReplayable,
    OutcomeUnknown,
    RecordTampered,
    ReplayedError,
    RequestInProgress,
    ResultNotStored,
)
from .flows.http import request_key
from .options import InvalidOption

__version__ = "0.2.0"

__all__ = [
    "FingerprintMismatch",
    "IdempotencyError",
    "IdempotencyTimeout",
    "IdempotencyUnavailable",
    "InvalidKey",
    "InvalidOption",
    "KeyRequired",
    "NotReplayable",
    "OutcomeUnknown",
    "RecordTampered",
    "ReplayedError",
    "RequestInProgress",
    "ResultNotStored",
    "arun",
    "idempotency_exempt",
    "idempotent_view",
    "request_key",
    "run",
]
