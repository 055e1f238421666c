"""What the inventory selects and reports: entries, details, filters, counts, purge results.

Nothing here talks to a store: these are built from a record's first bytes (see
:func:`django_idempotency.records.peek`) and what the store said about it.
"""

from __future__ import annotations

import contextlib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from ..events import Door
from ..records import STATES, Kind, Record, State, decode_http
from .display import human_duration, iso_ms, printable

#: What the state, kind and door filters accept, in the order lists and forms show them.
STATE_NAMES = [s.value for s in STATES]
KIND_NAMES = sorted(k.value for k in Kind)
# The edge only answers replays: no record is ever written through it.
DOOR_NAMES = [d.value for d in Door if d is not Door.EDGE]


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as listed: its header fields, status code, TTL and size."""

    #: The store's name for the record (its Redis key).
    name: str
    state: State
    kind: Kind
    #: The door the first request or call came through (``None``: not recorded).
    door: Door | None
    scope: str
    key: str
    #: The fencing token (hex) of a running record's owner.
    owner: str
    #: The request fingerprint (hex), empty when not compared.
    fingerprint: str
    created_ms: int
    finished_ms: int | None
    #: The stored HTTP status code (finished HTTP records only).
    status: int | None
    #: Milliseconds until the store expires the record; ``None`` when it has no TTL.
    ttl_ms: int | None
    #: Stored bytes: the whole record.
    size: int
    compression: str | None = None
    encrypted: bool = False
    #: Finished records: the payload as stored, and before compression.
    stored_payload: int | None = None
    original_payload: int | None = None
    #: A running record under the ``refuse`` policy: how long it outlives its lease (ms).
    hold_ms: int | None = None

    @property
    def abandoned(self) -> bool:
        """A running record whose owner died unfinished under the ``refuse`` policy.

        Its lease ran out (only its hold is left), and retries of its key are refused
        until an operator purges it, or it expires.
        """
        return (
            self.state is State.RUNNING
            and self.hold_ms is not None
            and self.ttl_ms is not None
            and self.ttl_ms <= self.hold_ms
        )

    @property
    def lease_ms(self) -> int | None:
        """A running record's lease left (ms): its TTL, less the hold of a ``refuse`` one
        (0 once abandoned); ``None`` for a finished record."""
        if self.state is not State.RUNNING or self.ttl_ms is None:
            return None
        return max(self.ttl_ms - (self.hold_ms or 0), 0)

    @property
    def redis_key(self) -> str:
        """The Redis key (the same as :attr:`name`)."""
        return self.name

    def age_ms(self, now: int) -> int:
        """Milliseconds since the record was created."""
        return max(now - self.created_ms, 0)

    def as_dict(self, now: int) -> dict[str, Any]:
        """The listing columns as JSON-ready values (seconds, bytes)."""
        return {
            "scope": self.scope,
            "key": self.key,
            "state": self.state.value,
            "abandoned": self.abandoned,
            "status": self.status,
            "age_seconds": round(self.age_ms(now) / 1000, 3),
            "ttl_seconds": None if self.ttl_ms is None else round(self.ttl_ms / 1000, 3),
            "size_bytes": self.size,
            "kind": self.kind.value,
            "door": None if self.door is None else self.door.value,
            "compression": self.compression,
            "encrypted": self.encrypted,
            "created_ms": self.created_ms,
            "finished_ms": self.finished_ms,
            "redis_key": self.name,
        }


@dataclass(frozen=True)
class Row:
    """One record as a listing shows it (``list``, the admin's pages): columns as text."""

    #: The record's id in URLs: the base64url characters between its name's braces.
    id: str
    #: ``abandoned`` for an abandoned running record (see :attr:`Entry.abandoned`).
    state: str
    status: str
    age: str
    ttl: str
    size: int
    kind: str
    door: str
    scope: str
    key: str
    running: bool

    @classmethod
    def of(cls, entry: Entry, now: int) -> Row:
        """``entry`` at time ``now`` (epoch ms); scope and key safe for a terminal."""
        return cls(
            id=entry.name[entry.name.rindex("{") + 1 : -1],
            state="abandoned" if entry.abandoned else entry.state.value,
            status="-" if entry.status is None else str(entry.status),
            age=human_duration(entry.age_ms(now)),
            ttl=human_duration(entry.ttl_ms),
            size=entry.size,
            kind=entry.kind.value,
            door="-" if entry.door is None else entry.door.value,
            scope=printable(entry.scope) or '""',
            key=printable(entry.key),
            running=entry.state is State.RUNNING,
        )


def split_body(record: Record) -> tuple[list[tuple[str, str]] | None, bytes]:
    """A record's stored headers (``None`` but for a finished HTTP response) and its body
    or payload; a response that does not decode is shown as its raw payload."""
    if record.kind is Kind.HTTP and record.state is State.DONE:
        with contextlib.suppress(ValueError, IndexError):
            return decode_http(record.payload)
    return None, record.payload


@dataclass(frozen=True)
class Detail:
    """A whole record, for ``show`` and the admin detail page."""

    entry: Entry
    #: Whether the record's MAC verified (``False``: tampered; never replayed).
    verified: bool
    #: HTTP records: the stored headers as ``(name, value)`` pairs.
    headers: list[tuple[str, str]] | None
    #: HTTP records: the response body; ``run()`` and unreplayable records: the payload.
    body: bytes
    problem: str = ""

    @property
    def body_label(self) -> str | None:
        """``body`` (an HTTP response) or ``payload``; ``None`` while a running record has none."""
        if self.entry.state is State.RUNNING and not self.body:
            return None
        return "payload" if self.headers is None else "body"

    def fields(self, now: int) -> list[tuple[str, str]]:
        """The record's header as ``(label, text)`` lines, as ``show`` and the admin print them."""
        e, row = self.entry, Row.of(self.entry, now)
        if e.abandoned:
            owner = ("owner", f"{e.owner} (died unfinished; refused for {row.ttl} more)")
        elif e.state is State.RUNNING:
            owner = ("owner", f"{e.owner} (lease: {human_duration(e.lease_ms)} left)")
        else:
            owner = ("ttl", row.ttl)
        return [
            ("redis key", e.name),
            ("kind", row.kind),
            ("door", row.door),
            ("scope", row.scope),
            ("key", row.key),
            ("state", row.state),
            ("status", row.status),
            ("fingerprint", e.fingerprint or "(not compared)"),
            ("created", f"{iso_ms(e.created_ms)} ({row.age} ago)"),
            ("finished", iso_ms(e.finished_ms) or "-"),
            owner,
            ("size", f"{e.size} bytes"),
        ]

    def body_text(self, limit: int) -> str | None:
        """The first ``limit`` bytes of the body as text, or ``None`` when it is binary."""
        head = self.body[:limit]
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut by the limit is still text.
            if exc.start < len(head) - 3 or len(self.body) <= limit:
                return None
            text = head[: exc.start].decode("utf-8")
        if any(ch < " " and ch not in "\t\r\n" for ch in text):
            return None
        return text

    def preview(self, limit: int) -> str:
        """The body's first ``limit`` bytes as text and how many more there are, or its
        first bytes in hex when it is binary."""
        text = self.body_text(limit)
        if text is None:
            return f"<binary> {self.body[:64].hex(' ')}"
        more = len(self.body) - limit
        return text if more <= 0 else f"{text}\n... ({more} more bytes)"

    def as_dict(self, now: int, preview_bytes: int) -> dict[str, Any]:
        """Every field, with a text preview of the body (``null`` when binary) and the
        creation and finish times as ISO 8601."""
        doc = self.entry.as_dict(now)
        lease = self.entry.lease_ms
        doc.update(
            owner=self.entry.owner or None,
            fingerprint=self.entry.fingerprint or None,
            lease_seconds=None if lease is None else round(lease / 1000, 3),
            verified=self.verified,
            headers=None if self.headers is None else [list(h) for h in self.headers],
            body_bytes=len(self.body),
            body_preview=self.body_text(preview_bytes),
            body_truncated=len(self.body) > preview_bytes,
            created_at=iso_ms(self.entry.created_ms),
            finished_at=iso_ms(self.entry.finished_ms),
        )
        return doc


@dataclass(frozen=True)
class Filters:
    """Which records to select; every field left at its default selects everything."""

    states: frozenset[str] = frozenset()
    kind: str | None = None
    door: str | None = None
    scope: str | None = None
    #: Exact client key.
    key: str | None = None
    #: ``fnmatch`` glob over the client key (case-sensitive).
    key_glob: str | None = None
    #: Case-insensitive substring of the scope or the key (the admin's search box).
    search: str | None = None
    #: Only records created more than this many seconds ago.
    older_than: float | None = None

    def __post_init__(self) -> None:
        unknown = set(self.states) - set(STATE_NAMES)
        if unknown:
            raise ValueError(f"unknown state(s): {', '.join(sorted(unknown))}")
        if self.kind is not None and self.kind not in KIND_NAMES:
            raise ValueError(f"unknown kind {self.kind!r} (http or run)")
        if self.door is not None and self.door not in DOOR_NAMES:
            raise ValueError(f"unknown door {self.door!r}")

    @property
    def selects_everything(self) -> bool:
        """True when no filter is set."""
        return self == Filters()

    def matches(self, entry: Entry, now: int) -> bool:
        """Whether ``entry`` passes every filter (``now`` in epoch milliseconds)."""
        door = None if entry.door is None else entry.door.value
        needle = (self.search or "").casefold()
        return (
            (not self.states or entry.state.value in self.states)
            and (self.kind is None or entry.kind.value == self.kind)
            and (self.door is None or door == self.door)
            and (self.scope is None or entry.scope == self.scope)
            and (self.key is None or entry.key == self.key)
            and (self.key_glob is None or fnmatch.fnmatchcase(entry.key, self.key_glob))
            and (not needle or needle in entry.key.casefold() or needle in entry.scope.casefold())
            and (self.older_than is None or entry.age_ms(now) > self.older_than * 1000)
        )


@dataclass
class Stats:
    """Exact counts of the selected records, plus a sampled memory estimate."""

    scanned: int = 0
    total: int = 0
    by_state: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in STATES})
    by_kind: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in Kind})
    #: Records by the door they came through (``unknown``: not recorded).
    by_door: dict[str, int] = field(default_factory=dict)
    #: Keys matching the record pattern that are not records (foreign or corrupt).
    unreadable: int = 0
    #: The stored bytes of every selected record.
    stored_bytes: int = 0
    #: Payload bytes of finished records as stored, and as they were before compression.
    payload_stored: int = 0
    payload_original: int = 0
    compressed: int = 0
    encrypted: int = 0
    memory_sampled: int = 0
    memory_sample_bytes: int = 0

    def count(self, entry: Entry) -> None:
        """Add ``entry`` to the counts."""
        self.total += 1
        self.by_state[entry.state.value] = self.by_state.get(entry.state.value, 0) + 1
        self.by_kind[entry.kind.value] = self.by_kind.get(entry.kind.value, 0) + 1
        door = "unknown" if entry.door is None else entry.door.value
        self.by_door[door] = self.by_door.get(door, 0) + 1
        self.stored_bytes += entry.size
        if entry.stored_payload is not None:
            self.payload_stored += entry.stored_payload
            self.payload_original += entry.original_payload or entry.stored_payload
        self.compressed += entry.compression is not None
        self.encrypted += entry.encrypted

    @property
    def compression_ratio(self) -> float | None:
        """Stored size over original size of the finished records (1.0: nothing saved)."""
        if not self.payload_original:
            return None
        return self.payload_stored / self.payload_original

    @property
    def memory_average(self) -> float | None:
        """Mean ``MEMORY USAGE`` per sampled record, in bytes."""
        return self.memory_sample_bytes / self.memory_sampled if self.memory_sampled else None

    @property
    def memory_estimate(self) -> int | None:
        """The mean times the number of records: memory held by them, roughly."""
        average = self.memory_average
        return None if average is None else round(average * self.total)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "total": self.total,
            "by_state": dict(self.by_state),
            "by_kind": dict(self.by_kind),
            "by_door": dict(self.by_door),
            "unreadable": self.unreadable,
            "scanned_keys": self.scanned,
            "stored_bytes": self.stored_bytes,
            "compression": {
                "compressed_records": self.compressed,
                "encrypted_records": self.encrypted,
                "ratio": self.compression_ratio,
            },
            "memory": {
                "sampled": self.memory_sampled,
                "sample_bytes": self.memory_sample_bytes,
                "average_bytes": self.memory_average,
                "estimated_total_bytes": self.memory_estimate,
            },
        }


@dataclass
class PurgeResult:
    """What a purge did (or, dry, would do)."""

    matched: int = 0
    deleted: int = 0
    #: Running records left alone because ``force`` was not given.
    skipped_running: int = 0
    #: Records that changed (or expired) between the scan and the delete, left alone.
    changed: int = 0
    # SCAN may return a key twice while Redis shrinks its table under our deletes: the
    # running records kept are remembered to be counted once. They are the requests in
    # flight, so this stays small (unlike remembering every key scanned).
    _running_seen: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
