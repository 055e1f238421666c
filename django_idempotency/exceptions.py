"""The exceptions raised by django-idempotency, rooted at :class:`IdempotencyError`.

Each HTTP-facing error carries the status and problem type it maps to, so the
doors can turn any of them into an RFC 9457 problem+json response without a
lookup table of their own.
"""

from __future__ import annotations

from typing import Any


class IdempotencyError(Exception):
    """Base class of every error this package raises."""

    status: int = 500
    title: str = "Idempotency error"
    type_slug: str = "error"
    #: Seconds a client should wait before retrying (sent as ``Retry-After``), if any.
    retry_after: int | None = None

    def __init__(self, detail: str = "", *, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidKey(IdempotencyError):
    """The Idempotency-Key header is empty, too long, malformed or of the wrong format."""

    status = 400
    title = "Invalid Idempotency-Key"
    type_slug = "invalid-key"


class KeyRequired(IdempotencyError):
    """The endpoint requires an Idempotency-Key and the request has none."""

    status = 400
    title = "Idempotency-Key required"
    type_slug = "key-required"


class FingerprintMismatch(IdempotencyError):
    """The key was first used with a different request (method, path, query or body)."""

    status = 422
    title = "Idempotency-Key reused with a different request"
    type_slug = "fingerprint-mismatch"


class RequestInProgress(IdempotencyError):
    """A request with this key is still being processed (conflict mode ``reject``)."""

    status = 409
    title = "A request with this Idempotency-Key is in progress"
    type_slug = "in-progress"
    retry_after = 1


class IdempotencyTimeout(RequestInProgress):
    """Waiting for the first caller with the same key took longer than the wait timeout."""

    title = "Timed out waiting for the first request with this Idempotency-Key"
    type_slug = "wait-timeout"


class OutcomeUnknown(IdempotencyError):
    """The first request or call with this key was claimed, and its owner stopped (crashed,
    killed) before storing an outcome; under the ``refuse`` policy nothing runs it again.

    Whether the action took effect is unknown: retries are refused until an operator
    reconciles it and purges the record (``idempotency_inspect purge``), or it expires.
    """

    status = 409
    title = "The outcome of the first request with this Idempotency-Key is unknown"
    type_slug = "outcome-unknown"


class NotReplayable(IdempotencyError):
    """The first response could not be stored (streaming or too large), so it cannot be replayed.

    The action is not run again either: the record remembers why.
    """

    status = 422
    title = "The original response cannot be replayed"
    type_slug = "not-replayable"


class IdempotencyUnavailable(IdempotencyError):
    """Redis could not be reached (or answered too slowly, or is full) and the policy is
    fail-closed: nothing ran."""

    status = 503
    title = "Idempotency store unavailable"
    type_slug = "unavailable"
    retry_after = 1


class ResultNotStored(IdempotencyError):
    """Critical: the action ran but its result could not be stored.

    Idempotency may be lost for this key: a later retry might run the action again.
    ``value`` holds what the action returned, ``error`` what it raised (one of them).
    """

    status = 500
    title = "Result could not be stored"
    type_slug = "result-not-stored"

    def __init__(
        self, detail: str = "", *, value: Any = None, error: BaseException | None = None
    ) -> None:
        super().__init__(detail)
        self.value = value
        self.error = error


class RecordTampered(IdempotencyError):
    """Critical: the stored record for this key failed verification.

    It was altered in Redis, copied from another key, written by something other than
    this app, or signed with a ``SECRET_KEY`` no longer configured. It is never replayed
    and never causes the action to run again: the key stays refused until the record
    expires or an operator purges it.
    """

    status = 500
    title = "Stored response failed verification"
    type_slug = "record-integrity"


class ReplayedError(IdempotencyError):
    """Stands in for a stored error whose class could not be rebuilt on replay."""

    title = "Replayed error"
    type_slug = "replayed-error"

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
