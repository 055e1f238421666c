"""What a refused claim means, for both lifecycles: the event it reports and the error
its caller gets, a store that is down included (``fail_open`` or ``fail_closed``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import Outcome
from ..exceptions import (
    FingerprintMismatch,
    IdempotencyError,
    IdempotencyTimeout,
    IdempotencyUnavailable,
    OutcomeUnknown,
    RecordTampered,
    RequestInProgress,
)
from ..stores.base import StoreError, StoreFull


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused claim: ``outcome`` to report (``None``: the engine already did) with
    ``extra``, and ``error`` for the caller (``None``: run unprotected, fail-open)."""

    outcome: Outcome | None
    error: IdempotencyError | None
    extra: dict[str, Any] = field(default_factory=dict)


def refusal(exc: Exception, *, fail_open: bool, expose: bool) -> Refusal:
    """What ``exc``, raised while claiming, means; re-raises anything that is no refusal.

    ``expose``: the caller may read the store's own error (``run()``'s caller is the
    server itself); an HTTP client learns that the store is down, not the server's
    addresses or errors.
    """
    if isinstance(exc, StoreError):
        if fail_open:
            return Refusal(Outcome.FAIL_OPEN, None, {"detail": str(exc)})
        what = "full (Redis is at maxmemory)" if isinstance(exc, StoreFull) else "unavailable"
        message = f"The idempotency store is {what}; retry later."
        error = IdempotencyUnavailable(f"{message} ({exc})" if expose else message)
        return Refusal(Outcome.UNAVAILABLE, error, {"detail": str(exc)})
    if isinstance(exc, FingerprintMismatch):
        return Refusal(Outcome.MISMATCH, exc)
    if isinstance(exc, IdempotencyTimeout):
        return Refusal(Outcome.WAIT_TIMEOUT, exc, {"wait": exc.extra.get("waited")})
    if isinstance(exc, RequestInProgress):
        return Refusal(Outcome.CONFLICT, exc)
    if isinstance(exc, OutcomeUnknown):
        return Refusal(Outcome.OUTCOME_UNKNOWN, exc)
    if isinstance(exc, RecordTampered):
        return Refusal(None, exc)  # the engine has reported it, as critical
    raise exc
