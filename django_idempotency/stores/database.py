"""Durable mode's rows: final records in the application's database, via the Django ORM.

Table ``django_idempotency_durablerecord`` (:class:`~django_idempotency.models.DurableRecord`):

=========  =======================================================================
Column     Holds
=========  =======================================================================
rid        the record id in hex (primary key): the same id as the Redis key's
record     the sealed record, byte for byte what Redis holds for it
expires    when the row stops counting (``TTL`` after it was written; indexed,
           so ``idempotency_inspect purge --rows`` deletes expired rows by range)
=========  =======================================================================

A row is inserted inside the transaction of the work it records. Its primary key is
the record id, so a second run of the same work (possible only when a lease was lost
while the first still ran) fails its insert and rolls back instead of committing twice.
An expired row is deleted first: a key may be used again after ``TTL``, as in Redis.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import router
from django.utils import timezone

__all__ = ["DatabaseRows"]


def _model() -> Any:
    # Imported late: the engine is built before the app registry may be ready.
    from ..models import DurableRecord

    return DurableRecord


class DatabaseRows:
    """The :class:`~django_idempotency.stores.base.RowStore` on the Django ORM."""

    def alias(self) -> str:
        """The database Django's router writes durable rows to."""
        return str(router.db_for_write(_model()))

    def write(self, rid: bytes, sealed: bytes, ttl_ms: int, using: str) -> None:
        """Insert the row for ``rid`` on ``using``, in its open transaction."""
        model = _model()
        rows = model._default_manager.using(using)
        now = timezone.now()
        rows.filter(rid=rid.hex(), expires__lte=now).delete()
        rows.create(rid=rid.hex(), record=sealed, expires=now + dt.timedelta(milliseconds=ttl_ms))

    def read(self, rid: bytes) -> bytes | None:
        """The committed, unexpired row for ``rid``, if any."""
        model = _model()
        found = (
            model._default_manager.using(router.db_for_read(model))
            .filter(rid=rid.hex(), expires__gt=timezone.now())
            .values_list("record", flat=True)
            .first()
        )
        return None if found is None else bytes(found)

    def count(self, *, expired: bool = False) -> int:
        """How many rows there are (``expired``: only the expired ones)."""
        model = _model()
        rows = model._default_manager.using(router.db_for_read(model)).all()
        if expired:
            rows = rows.filter(expires__lte=timezone.now())
        return int(rows.count())

    def purge(self, *, dry_run: bool = False) -> int:
        """Delete the expired rows; how many were (or, with ``dry_run``, would be)."""
        model = _model()
        expired = model._default_manager.using(router.db_for_write(model)).filter(
            expires__lte=timezone.now()
        )
        if dry_run:
            return int(expired.count())
        deleted, _ = expired.delete()
        return int(deleted)
