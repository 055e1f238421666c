"""Durable mode: an outcome is also kept as a row in the application's own database.

The rules, for every door that is durable (the decorator on a sync view and the DRF
mixin, which hold the view's transaction, and ``run(durable=True)``):

* **The row commits with the work.** It is written inside the work's transaction, after
  the work, so it exists exactly when the work committed; the Redis record follows after
  the commit, as without durable mode. An HTTP door writes it in the view's transaction
  (one it opens when the view runs outside one); ``run()`` runs its action in a
  transaction of its own, and so refuses to run inside ``transaction.atomic()``.
* **A first-time claim reads the row first.** Redis may have forgotten an outcome that
  committed (a worker killed between its commit and the Redis store, a flush, a failover):
  a row is the outcome, written back to Redis and replayed.
* **Outcome unknown has an answer in a row.** An owner that died after its commit, before
  Redis got the outcome, left a row: the outcome is known after all, and replayed.
* A row that does not verify, or belongs to another request, is refused as a Redis
  record would be. The rows themselves are read and written by
  :mod:`.stores.database`.

Django's transactions are synchronous: coroutines are never durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import transaction

from .engine import Claim, Engine, Found, ms
from .events import Door
from .exceptions import OutcomeUnknown, RecordTampered, ResultNotStored
from .records import Kind, Record, State
from .steps import Flow
from .stores.database import DatabaseRows

logger = logging.getLogger("django_idempotency")

T = TypeVar("T")

#: What an outcome is stored as: its state, payload and HTTP status (``None``: a call).
Plan = tuple[State, bytes, int | None]

rows = DatabaseRows()


class RowNotWritten(Exception):
    """A durable result's row could not be written: the work's transaction rolled back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# -- before the work ----------------------------------------------------------------------


def claiming(
    engine: Engine,
    claim: Flow[Claim | Found],
    kind: Kind,
    door: Door,
    scope: str | bytes,
    key: str | bytes,
    fingerprint: bytes,
    *,
    ttl: float,
) -> Flow[Claim | Found]:
    """``claim`` (the engine's acquiring flow for this key), answered from the key's row
    where Redis has no outcome: a first-time claim, or a key refused as outcome unknown."""
    try:
        got = yield from claim
    except OutcomeUnknown:
        found = _abandoned(engine, kind, door, scope, key, fingerprint)
        if found is None:
            raise
        return found
    if isinstance(got, Claim):
        return _recovered(engine, got, ttl=ttl) or got
    return got


def _row_record(engine: Engine, who: Claim, sealed: bytes) -> Record:
    record = engine.verified(who, sealed)
    if record.state is State.RUNNING:  # only final records are ever written as rows
        raise RecordTampered("The durable row for this key is not a final record.")
    return record


def _recovered(engine: Engine, claim: Claim, *, ttl: float) -> Found | None:
    """Before a durable key's action runs: its committed row, written back to Redis.

    The claim is released when reading the row fails or the row is refused.
    """
    try:
        sealed = rows.read(claim.slot.rid)
        if sealed is None:
            return None
        record = _row_record(engine, claim, sealed)
    except BaseException:
        engine.release(claim)
        raise
    try:
        engine.complete(claim, record.state, record.payload, ttl=ttl, status=record.status)
    except ResultNotStored:
        # The row answers the next retry too; Redis only makes it faster.
        logger.warning(
            "idempotency key %r: replayed from its durable row, but Redis did not take it back",
            claim.given[1],
            exc_info=True,
        )
    return Found(record)


def _abandoned(
    engine: Engine, kind: Kind, door: Door, scope: str | bytes, key: str | bytes, fp: bytes
) -> Found | None:
    """For a key refused as outcome unknown: its committed row (``None``: no row)."""
    who = engine.asking(kind, door, scope, key, fp)
    sealed = rows.read(who.slot.rid)
    return None if sealed is None else Found(_row_record(engine, who, sealed))


# -- the row, in the work's transaction ---------------------------------------------------


def write(engine: Engine, claim: Claim, plan: Plan, *, ttl: float, aliases: list[str]) -> None:
    """Write ``claim``'s outcome as a row in the work's open transaction (``aliases``).

    :meth:`~.engine.Engine.complete` still follows, after the commit.
    """
    state, payload, status = plan
    # The row must share the work's transaction: the rows' database if the work
    # opened one there, else the work's.
    alias = rows.alias()
    using = alias if alias in aliases else aliases[0]
    record = engine.final(claim, state, payload, status)
    rows.write(claim.slot.rid, engine.sealer.seal(claim.slot.rid, record), ms(ttl), using)


def own_transaction() -> transaction.Atomic:
    """A transaction on the rows' database, for work that runs outside one."""
    return transaction.atomic(using=rows.alias())


def refuse_open_transaction() -> None:
    """``run(durable=True)`` runs its action in a transaction of its own: not inside one."""
    from .flows.http import open_transactions

    if open_transactions():
        raise transaction.TransactionManagementError(
            "run(durable=True) runs the action in a transaction of its own, so that the "
            "work and its stored result commit together; it cannot run inside "
            "transaction.atomic(). Call it outside the atomic block."
        )


def run(
    engine: Engine,
    claim: Claim,
    action: Callable[[], T],
    plan_of: Callable[[T], tuple[State, bytes, str | None]],
    *,
    ttl: float,
) -> tuple[T, tuple[State, bytes, str | None]]:
    """``action()`` and its result's row in one transaction, which commits on return.

    The value, and its plan (``plan_of(value)``) for the Redis store that follows.
    :class:`RowNotWritten` when the row could not be written (the work rolled back).
    """
    alias = rows.alias()
    with transaction.atomic(using=alias, durable=True):
        value = action()
        plan = plan_of(value)
        try:
            write(engine, claim, (plan[0], plan[1], None), ttl=ttl, aliases=[alias])
        except Exception as exc:
            raise RowNotWritten(exc) from exc
    return value, plan
