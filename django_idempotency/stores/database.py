"""Durable mode's rows: final records in the application's database.

Table ``django_idempotency_durablerecord`` (:class:`~django_idempotency.models.DurableRecord`):

==========  ======================================================================
Column      Holds
==========  ======================================================================
rid         the record id in hex (primary key): the same id as the Redis key's
record      the sealed record, byte for byte what Redis holds for it
expires_ms  when the row stops counting, in Unix milliseconds (``TTL`` after it was
            written; indexed, so purging expired rows reads a range)
==========  ======================================================================

A row is inserted inside the transaction of the work it records. Its primary key is
the record id, so a second run of the same work (possible only when a lease was lost
while the first still ran) fails its insert and rolls back instead of committing twice.
A read that finds an expired row deletes it: the key may then be used again, as in
Redis, and the next insert for it does not collide.

Every first-time claim of a durable key reads here, and every durable result inserts
here, so both are one plain SQL statement through Django's connection rather than ORM
queries: the ORM's query building cost more than the statements.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import connections, router

__all__ = ["DatabaseRows"]

_INSERT = "INSERT INTO {table} (rid, record, expires_ms) VALUES (%s, %s, %s)"
_SELECT = "SELECT record, expires_ms FROM {table} WHERE rid = %s"
_DELETE_EXPIRED = "DELETE FROM {table} WHERE rid = %s AND expires_ms <= %s"


def _model() -> Any:
    # Imported late: the engine is built before the app registry may be ready.
    from ..models import DurableRecord

    return DurableRecord


def _now_ms() -> int:
    return int(time.time() * 1000)


def _execute(alias: str, statement: str, params: list[Any]) -> Any:
    """Run ``statement`` (``{table}`` in it: the rows' table) on database ``alias``; the
    first row it returns, if it returns rows (DB-API: a ``description``)."""
    table = connections[alias].ops.quote_name(_model()._meta.db_table)
    with connections[alias].cursor() as cursor:
        cursor.execute(statement.format(table=table), params)
        return cursor.fetchone() if cursor.description is not None else None


class DatabaseRows:
    """Durable mode's rows on Django's databases (read, insert, purge)."""

    def alias(self) -> str:
        """The database Django's router writes durable rows to."""
        return str(router.db_for_write(_model()))

    def write(self, rid: bytes, sealed: bytes, ttl_ms: int, using: str) -> None:
        """Insert the row for ``rid`` on ``using``, in its open transaction."""
        _execute(using, _INSERT, [rid.hex(), sealed, _now_ms() + ttl_ms])

    def read(self, rid: bytes) -> bytes | None:
        """The committed, unexpired row for ``rid``, if any (an expired one is deleted)."""
        found = _execute(str(router.db_for_read(_model())), _SELECT, [rid.hex()])
        if found is None:
            return None
        record, expires_ms = found
        if expires_ms > _now_ms():
            return bytes(record)
        _execute(self.alias(), _DELETE_EXPIRED, [rid.hex(), _now_ms()])
        return None

    def _rows(self, alias: str) -> Any:
        return _model()._default_manager.using(alias)

    def count(self, *, expired: bool = False) -> int:
        """How many rows there are (``expired``: only the expired ones)."""
        rows = self._rows(str(router.db_for_read(_model()))).all()
        if expired:
            rows = rows.filter(expires_ms__lte=_now_ms())
        return int(rows.count())

    def purge(self, *, dry_run: bool = False) -> int:
        """Delete the expired rows; how many were (or, with ``dry_run``, would be)."""
        expired = self._rows(self.alias()).filter(expires_ms__lte=_now_ms())
        if dry_run:
            return int(expired.count())
        deleted, _ = expired.delete()
        return int(deleted)
