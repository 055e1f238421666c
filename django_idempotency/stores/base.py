"""The storage seam: what the engine needs from a store, in neutral terms.

The engine claims, completes, releases and renews records through a :class:`Store`
(an :class:`AsyncStore` for the asyncio doors) and hears of a concurrent owner's
completion from a :class:`Notifier`. None of them knows Redis: :mod:`.redis` and
:mod:`.memory` implement them, as a new backend would.

A store moves *sealed* records: opaque bytes built and checked by
:mod:`django_idempotency.records`. It reads only where a running record keeps its fencing
token (:data:`~django_idempotency.records.TOKEN_SLICE`), to refuse a completion to a
caller whose lease was lost.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


def record_name(prefix: str, rid: bytes) -> str:
    """The name a store gives record ``rid``: ``<prefix>:{<16 base64url characters>}``.

    The braces make it a Redis Cluster hash tag; the inventory reads the id back from them.
    """
    return f"{prefix}:{{{base64.urlsafe_b64encode(rid).decode()}}}"


def parse_record_id(shown: str) -> bytes:
    """The id of the record shown as ``shown`` (16 base64url characters, as listed by
    ``idempotency_inspect``); ``ValueError`` when it is not one."""
    try:
        rid = base64.urlsafe_b64decode(shown.encode() + b"==")
    except (binascii.Error, ValueError):
        rid = b""
    if len(shown) != 16 or len(rid) != 12:
        raise ValueError(f"not a record id: {shown!r}")
    return rid


#: Whether a record's first bytes hold all that listing it needs (for the scanners).
Complete = Callable[[bytes], bool]
#: Whether a record (name, first bytes), read again just before deleting it, may go.
Wanted = Callable[[str, bytes], bool]


class StoreError(Exception):
    """Any failure of the store; the engine maps it to fail-closed or fail-open."""


class StoreUnavailable(StoreError):
    """The store could not be reached or did not answer in time."""


class StoreBusy(StoreUnavailable):
    """No connection was free (the client's pool is exhausted); nothing was sent."""


class StoreFull(StoreError):
    """The store refused a write because it is out of memory and may not evict."""


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one record lives.

    ``rid`` is the record's id: a hash of its kind, scope and key that never contains
    client input. ``name`` is the store's own name for it (a Redis key, say).
    """

    rid: bytes
    name: str


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """What a claim found.

    ``record`` is ``None`` when the caller now owns the slot; otherwise it holds the
    sealed record that was already there, and ``lease_left_ms`` how long a running
    one's lease still lasts.
    """

    record: bytes | None
    lease_left_ms: int = 0

    @property
    def claimed(self) -> bool:
        """Whether the caller created the running record and now owns the slot."""
        return self.record is None


@dataclass(frozen=True, slots=True)
class RawHead:
    """The start of one record as a scanner read it: its name, first bytes, TTL and size."""

    name: str
    head: bytes
    #: Milliseconds until the store expires it; ``None`` when it has no TTL.
    ttl_ms: int | None
    size: int


@dataclass(frozen=True, slots=True)
class Batch:
    """One scan batch: where it came from, how many keys so far, what was read."""

    node: Any
    scanned: int
    heads: list[RawHead]
    #: Keys under the prefix that are not records (someone else's).
    foreign: int


class Store(Protocol):
    """Blocking record operations; each is one atomic step on the store."""

    def slot(self, rid: bytes) -> Slot:
        """The slot of the record with id ``rid``."""

    def claim(self, slot: Slot, running: bytes, lease_ms: int) -> ClaimReply:
        """Create ``running`` with a lease unless a record exists; else return that record."""

    def complete(self, slot: Slot, token: bytes, record: bytes, ttl_ms: int) -> bool:
        """Replace our running record with ``record`` if ``token`` still owns it; notify."""

    def release(self, slot: Slot, token: bytes) -> bool:
        """Delete our running record if ``token`` still owns it; notify."""

    def renew(self, leases: Sequence[tuple[Slot, bytes, int]]) -> list[bool]:
        """Extend each ``(slot, token, lease_ms)`` still owned; True where it was."""

    def read(self, slot: Slot) -> bytes | None:
        """The sealed record in ``slot``, or ``None``; changes nothing (no claim, no flag)."""

    @property
    def notifier(self) -> Notifier:
        """The process-wide notifier for this store's completions."""

    def aio(self) -> AsyncStore:
        """The asyncio form of this store for the running event loop."""

    def scanner(self) -> Any:
        """What the inventory (``idempotency_inspect``, the admin) scans and purges with."""


class AsyncStore(Protocol):
    """The same operations for the asyncio doors (no thread per request)."""

    def slot(self, rid: bytes) -> Slot:
        """The slot of the record with id ``rid``."""

    async def claim(self, slot: Slot, running: bytes, lease_ms: int) -> ClaimReply:
        """See :meth:`Store.claim`."""

    async def complete(self, slot: Slot, token: bytes, record: bytes, ttl_ms: int) -> bool:
        """See :meth:`Store.complete`."""

    async def release(self, slot: Slot, token: bytes) -> bool:
        """See :meth:`Store.release`."""

    async def read(self, slot: Slot) -> bytes | None:
        """See :meth:`Store.read`."""


class Notifier(Protocol):
    """Tells local waiters that a slot's owner finished, without a connection per waiter."""

    def start(self) -> None:
        """Begin listening (in the background), so the first wait is covered."""

    def position(self) -> tuple[int, int]:
        """Read *before* sending a claim; handed to :meth:`wait` if the claim finds a runner.

        It lets the notifier tell whether every completion published after the claim will
        reach the waiter (the subscription was live throughout) or not.
        """

    def wait(self, slot: Slot, position: tuple[int, int], timeout: float) -> bool:
        """Block up to ``timeout``; True when the owner finished. Either way, look again."""

    async def await_outcome(self, slot: Slot, position: tuple[int, int], timeout: float) -> bool:
        """The same for a coroutine: it holds neither a thread nor a connection."""
