"""Durable mode's database side: the stored response, kept in the view's own transaction.

Redis coordinates (claims, leases, waiters, fast replays); this table only answers the
question Redis can forget: did a request with this key already commit its work? The row
is written inside the view's transaction, just before it commits, so it exists exactly
when the work committed: a worker killed after the commit but before the Redis store,
or a Redis that lost its data, leaves a row the retry replays; a rollback leaves none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import router
from django.utils import timezone

from ..records import State


@dataclass(frozen=True)
class Row:
    """A committed durable response, as the HTTP flow replays it."""

    state: State
    status: int | None
    payload: bytes
    fingerprint: bytes


def _model() -> Any:
    # Imported late: the flow module is imported before the app registry is ready.
    from ..models import StoredResponse

    return StoredResponse


def write(
    scope: str,
    key: str,
    fingerprint: bytes,
    state: State,
    status: int | None,
    payload: bytes,
    *,
    ttl: float,
    using: str | None = None,
) -> None:
    """Insert the response row on ``using`` (inside the caller's open transaction).

    An expired row for the same key is replaced: the key may be used again after ``TTL``,
    exactly as in Redis.
    """
    model = _model()
    alias = using or router.db_for_write(model)
    now = timezone.now()
    model._default_manager.using(alias).filter(scope=scope, key=key, expires__lte=now).delete()
    model._default_manager.using(alias).create(
        scope=scope,
        key=key,
        fingerprint=fingerprint,
        state=state.value,
        status=status,
        payload=payload,
        created=now,
        expires=now + dt.timedelta(seconds=ttl),
    )


def read(scope: str, key: str, *, using: str | None = None) -> Row | None:
    """The committed, unexpired row for ``scope`` and ``key``, if any."""
    model = _model()
    alias = using or router.db_for_read(model)
    row = (
        model._default_manager.using(alias)
        .filter(scope=scope, key=key, expires__gt=timezone.now())
        .values_list("state", "status", "payload", "fingerprint")
        .first()
    )
    if row is None:
        return None
    state, status, payload, fingerprint = row
    return Row(State(state), status, bytes(payload), bytes(fingerprint))


def purge(*, using: str | None = None, dry_run: bool = False) -> int:
    """Delete the expired rows (behind the index on ``expires``); the count deleted."""
    model = _model()
    alias = using or router.db_for_write(model)
    expired = model._default_manager.using(alias).filter(expires__lte=timezone.now())
    if dry_run:
        return int(expired.count())
    deleted, _ = expired.delete()
    return int(deleted)
