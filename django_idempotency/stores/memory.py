"""The in-memory store: records in this process's memory, for one process only.

For unit tests (a user's and this project's fast tier) and for a single-process
deployment that accepts losing its records on restart. It keeps the contract of every
store (``tests/test_store_contract.py`` runs the same tests against it and Redis):
one atomic step per operation (a lock), leases and TTLs that expire, a waiter flag
that makes a completion wake the waiters of that record, and a fencing token checked
before every write. Threads wait on an :class:`threading.Event`, coroutines on a future
of their own loop; nothing is polled.

Every process has its own records: behind a server with several worker processes, or
beside a Celery worker, duplicates in different processes do not see each other. Use
Redis there. Select it with ``IDEMPOTENCY = {"STORE": "django_idempotency.stores.memory
.open_store"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..records import RUNNING_CHAR, TOKEN_SLICE, WAITER_FLAG_OFFSET, held_ms
from .base import Batch, ClaimReply, Complete, RawHead, Slot, Wanted, record_name

if TYPE_CHECKING:
    from ..conf import IdempotencySettings

_WAITING = ord("w")
#: How many completions are remembered for a waiter that registers after one.
_HEARD_MAX = 100_000


def open_store(settings: IdempotencySettings) -> MemoryStore:
    """A new in-memory store for ``settings`` (its key prefix names the records)."""
    return MemoryStore(settings.KEY_PREFIX)


class MemoryStore:
    """Record operations on a dict, one lock making each of them atomic."""

    def __init__(self, prefix: str = "idem") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        #: name -> (record bytes, when it expires on the monotonic clock).
        self._records: dict[str, tuple[bytes, float]] = {}
        #: What wakes this store's waiters.
        self.notifier = MemoryNotifier()
        self._aio = AsyncMemoryStore(self)

    def aio(self) -> AsyncMemoryStore:
        """The same store for coroutines (nothing in it blocks)."""
        return self._aio

    def scanner(self) -> MemoryScanner:
        """What ``idempotency_inspect`` and the admin scan and purge with."""
        return MemoryScanner(self)

    def slot(self, rid: bytes) -> Slot:
        """The slot of record ``rid``."""
        return Slot(rid, record_name(self.prefix, rid))

    def close(self) -> None:
        """Nothing to release: the records stay until they expire."""

    # -- under the lock -------------------------------------------------------------------

    def _get(self, name: str, now: float) -> bytes | None:
        entry = self._records.get(name)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._records[name]
            return None
        return entry[0]

    def _owned(self, name: str, token: bytes, now: float) -> bytes | None:
        record = self._get(name, now)
        if record is None or record[:1] != RUNNING_CHAR or record[TOKEN_SLICE] != token:
            return None
        return record

    # -- the four steps -------------------------------------------------------------------

    def claim(self, slot: Slot, running: bytes, lease_ms: int) -> ClaimReply:
        """Create ``running`` with a lease unless a record exists; else return that record."""
        now = time.monotonic()
        with self._lock:
            record = self._get(slot.name, now)
            if record is None:
                # A "refuse" record outlives its lease by its hold (see the Redis claim).
                hold = (held_ms(running) or 0) / 1000
                self._records[slot.name] = (running, now + lease_ms / 1000 + hold)
                return ClaimReply(None)
            if record[:1] != RUNNING_CHAR:
                return ClaimReply(record)
            expires = self._records[slot.name][1]
            if record[WAITER_FLAG_OFFSET] != _WAITING:
                # Flagged in the store, so its completion wakes the waiters; the reply
                # is the record as the claim found it.
                flagged = bytearray(record)
                flagged[WAITER_FLAG_OFFSET] = _WAITING
                self._records[slot.name] = (bytes(flagged), expires)
        held = held_ms(record)
        if held is not None:  # 0 once the lease ran out: the owner died unfinished
            return ClaimReply(record, max(int((expires - now) * 1000) - held, 0))
        return ClaimReply(record, max(int((expires - now) * 1000), 1))

    def read(self, slot: Slot) -> bytes | None:
        """The record in ``slot``, or ``None``; changes nothing."""
        with self._lock:
            return self._get(slot.name, time.monotonic())

    def complete(self, slot: Slot, token: bytes, record: bytes, ttl_ms: int) -> bool:
        """Replace our running record with ``record`` if ``token`` still owns it; notify."""
        now = time.monotonic()
        with self._lock:
            running = self._owned(slot.name, token, now)
            if running is None:
                return self._get(slot.name, now) == record  # a retried completion
            self._records[slot.name] = (record, now + ttl_ms / 1000)
        self.notifier.publish(slot.name)
        return True

    def release(self, slot: Slot, token: bytes) -> bool:
        """Delete our running record if ``token`` still owns it; notify."""
        with self._lock:
            if self._owned(slot.name, token, time.monotonic()) is None:
                return False
            del self._records[slot.name]
        self.notifier.publish(slot.name)
        return True

    def renew(self, leases: Sequence[tuple[Slot, bytes, int]]) -> list[bool]:
        """Extend each ``(slot, token, lease_ms)`` still owned; True where it was."""
        now = time.monotonic()
        kept: list[bool] = []
        with self._lock:
            for slot, token, lease_ms in leases:
                record = self._owned(slot.name, token, now)
                if record is not None:
                    hold = (held_ms(record) or 0) / 1000
                    self._records[slot.name] = (record, now + lease_ms / 1000 + hold)
                kept.append(record is not None)
        return kept


class AsyncMemoryStore:
    """:class:`MemoryStore` for coroutines: its steps never block, so they run inline."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def slot(self, rid: bytes) -> Slot:
        """The slot of record ``rid``."""
        return self._store.slot(rid)

    async def claim(self, slot: Slot, running: bytes, lease_ms: int) -> ClaimReply:
        """See :meth:`MemoryStore.claim`."""
        return self._store.claim(slot, running, lease_ms)

    async def complete(self, slot: Slot, token: bytes, record: bytes, ttl_ms: int) -> bool:
        """See :meth:`MemoryStore.complete`."""
        return self._store.complete(slot, token, record, ttl_ms)

    async def release(self, slot: Slot, token: bytes) -> bool:
        """See :meth:`MemoryStore.release`."""
        return self._store.release(slot, token)

    async def read(self, slot: Slot) -> bytes | None:
        """See :meth:`MemoryStore.read`."""
        return self._store.read(slot)


class Watch:
    """One waiting thread (an event) or coroutine (a future of its loop), for a notifier."""

    __slots__ = ("event", "future", "loop", "notified")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.notified = False
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[bool] | None = None if loop is None else loop.create_future()

    def deliver(self, notified: bool) -> None:
        """Wake the waiter; ``notified``: its record's owner finished (else: look again)."""
        self.notified = notified
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and self.future is not None:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody awaits it
                self.loop.call_soon_threadsafe(_resolve, self.future, notified)

    def wait(self, timeout: float) -> bool:
        """Block the thread up to ``timeout`` seconds; whether it was notified."""
        assert self.event is not None
        self.event.wait(timeout)
        return self.notified

    async def wait_async(self, timeout: float) -> bool:
        """Await up to ``timeout`` seconds; whether it was notified."""
        assert self.future is not None and self.loop is not None
        timer = self.loop.call_later(timeout, _resolve, self.future, False)
        try:
            return await self.future
        finally:
            timer.cancel()


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def forget(watches: dict[str, list[Watch]], name: str, watch: Watch) -> None:
    """Take ``watch`` off the waiters of ``name`` (a no-op once it was woken)."""
    waiting = watches.get(name)
    if waiting is not None and watch in waiting:
        waiting.remove(watch)
        if not waiting:
            del watches[name]


class MemoryNotifier:
    """Wakes the waiters of a record when its owner completes or releases it.

    A completion that happens between a waiter's claim and its registration is
    remembered (by the sequence number it got), so registering late finds it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._heard: dict[str, int] = {}
        self._watches: dict[str, list[Watch]] = {}

    def start(self) -> None:
        """Nothing to start: completions are heard in this process."""

    def position(self) -> tuple[int, int]:
        """Read before a claim; see :meth:`wait`."""
        return 1, self._seq

    def publish(self, name: str) -> None:
        """The record ``name`` finished: wake its waiters."""
        with self._lock:
            self._seq += 1
            self._heard.pop(name, None)
            self._heard[name] = self._seq
            if len(self._heard) > _HEARD_MAX:
                del self._heard[next(iter(self._heard))]
            watches = self._watches.pop(name, ())
        for watch in watches:
            watch.deliver(True)

    @contextlib.contextmanager
    def _watching(self, slot: Slot, position: tuple[int, int], watch: Watch) -> Iterator[bool]:
        """``watch`` registered for the block; yields False when the record already
        finished after ``position`` (the claim was sent), and then registers nothing."""
        with self._lock:
            finished = self._heard.get(slot.name, 0) > position[1]
            if not finished:
                self._watches.setdefault(slot.name, []).append(watch)
        try:
            yield not finished
        finally:
            with self._lock:
                forget(self._watches, slot.name, watch)

    def wait(self, slot: Slot, position: tuple[int, int], timeout: float) -> bool:
        """Block up to ``timeout``; True when the owner finished. Either way, look again."""
        watch = Watch()
        with self._watching(slot, position, watch) as registered:
            return not registered or watch.wait(timeout)

    async def await_outcome(self, slot: Slot, position: tuple[int, int], timeout: float) -> bool:
        """:meth:`wait` for a coroutine."""
        watch = Watch(asyncio.get_running_loop())
        with self._watching(slot, position, watch) as registered:
            return not registered or await watch.wait_async(timeout)


class MemoryScanner:
    """What the inventory needs of a store, over the in-memory records (one "node")."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def node_for(self, name: str) -> Any:
        """The node holding ``name``: the store."""
        return self.store

    def _snapshot(self) -> list[RawHead]:
        now = time.monotonic()
        with self.store._lock:
            items = list(self.store._records.items())
        return [
            RawHead(name, record, max(int((expires - now) * 1000), 0), len(record))
            for name, (record, expires) in items
            if expires > now
        ]

    def heads(
        self, node: Any, names: Sequence[bytes], complete: Complete
    ) -> tuple[list[RawHead], int]:
        """The records named (whole: they are in memory), and 0 foreign keys."""
        wanted = {n.decode() for n in names}
        return [h for h in self._snapshot() if h.name in wanted], 0

    def page(
        self, cursor: str | None, count: int, complete: Complete
    ) -> Iterator[tuple[Batch, str | None]]:
        """``count`` records at a time from ``cursor`` (an offset, in insertion order)."""
        try:
            start = int(cursor or 0)
        except ValueError:
            raise ValueError(f"bad page cursor {cursor!r}") from None
        heads = self._snapshot()
        scanned = 0
        while True:
            chunk = heads[start : start + count]
            start += count
            scanned += len(chunk)
            after = str(start) if start < len(heads) else None
            yield Batch(self.store, scanned, chunk, 0), after
            if after is None:
                return

    def get(self, name: str) -> tuple[bytes, int | None] | None:
        """The whole record under ``name`` and its TTL, or ``None``."""
        found = [h for h in self._snapshot() if h.name == name]
        return (found[0].head, found[0].ttl_ms) if found else None

    def memory_usage(self, node: Any, names: Sequence[str]) -> list[int]:
        """Each existing record's size in bytes."""
        sizes = {h.name: h.size for h in self._snapshot()}
        return [sizes[n] for n in names if n in sizes]

    def groups(self, names: Sequence[str]) -> Iterator[tuple[Any, list[str]]]:
        """All the names in one group: one lock makes their delete atomic."""
        if names:
            yield self.store, list(names)

    def delete_checked(
        self, node: Any, names: list[str], still_wanted: Wanted, complete: Complete
    ) -> tuple[int, int]:
        """Delete those of ``names`` that ``still_wanted(name, record)`` accepts, atomically.

        Returns (deleted, changed), as the Redis scanner does.
        """
        deleted = changed = 0
        now = time.monotonic()
        with self.store._lock:
            for name in names:
                record = self.store._get(name, now)
                if record is None:
                    continue
                if still_wanted(name, record):
                    del self.store._records[name]
                    deleted += 1
                else:
                    changed += 1
        return deleted, changed
