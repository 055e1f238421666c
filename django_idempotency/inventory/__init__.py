"""Read, count and purge stored records: the one model ``idempotency_inspect`` and the admin show.

Everything streams, one store batch at a time, so memory is bounded by the batch size
however many records exist. The store's scanner (for Redis:
:mod:`django_idempotency.stores.redis.scan`) finds records and reads their first bytes;
this module decodes them (decrypting the meta when encryption is on), filters, counts and
decides what a purge may delete. Filters run in Python on the *decoded* header: store
names are hashes of kind, scope and key, so a client's key can never be a store pattern.

Purging never deletes a ``running`` record unless forced: a retry would run the action a
second time while the first run may still be going. Every deletion is checked again
against a fresh read, so a record that changed in between (it expired and a new request
claimed it) is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..engine import now_ms
from ..records import (
    MAC_BYTES,
    REFUSE_FLAG,
    RUNNING_CHAR,
    IntegrityError,
    Kind,
    Sealer,
    State,
    held_ms,
    peek,
)
from ..stores.base import Batch, parse_record_id
from .dashboard import SCOPE_COUNTERS, Dashboard, TopScopes, age_buckets
from .query import Detail, Entry, Filters, PurgeResult, Row, Stats, split_body

# The model the command and the admin are built on; text helpers are in .display.
__all__ = [
    "SCOPE_COUNTERS",
    "Dashboard",
    "Detail",
    "Entry",
    "Filters",
    "Inventory",
    "PurgeResult",
    "Row",
    "Stats",
    "TopScopes",
    "age_buckets",
]

#: Default keys per store round trip, and the unit of memory use.
SCAN_COUNT = 1000
#: How many records ``stats`` asks the store's memory usage of.
MEMORY_SAMPLE = 1000

#: Selects every record.
EVERYTHING = Filters()

#: Called after each batch with (keys scanned so far, records selected so far).
Progress = Callable[[int, int], None]


def _rid(name: str) -> bytes | None:
    try:
        return parse_record_id(name[name.rindex("{") + 1 : -1])
    except ValueError:
        return None


class Inventory:
    """Streams, counts and purges the records of one store."""

    def __init__(self, engine: Any, *, count: int = SCAN_COUNT) -> None:
        if count <= 0:
            raise ValueError("count must be positive")
        self.engine = engine
        self.sealer: Sealer = engine.sealer
        self.scanner: Any = engine.store.scanner()
        self.count = count

    # -- decoding -----------------------------------------------------------------------

    def _complete(self, head: bytes) -> bool:
        """Whether a record's first bytes hold everything an entry shows."""
        try:
            # An abandoned record is told by its hold, in its last bytes: read it whole.
            held = head[:1] == RUNNING_CHAR and bool(head[3] & REFUSE_FLAG)
            return peek(head).payload_offset is not None and not held
        except (ValueError, IndexError):
            return True  # not a record: reading more will not help

    def entry(self, name: str, head: bytes, ttl_ms: int | None, size: int) -> Entry | None:
        """An :class:`Entry` from a record's first bytes, or ``None`` when it is not one."""
        try:
            header = peek(head)
        except (ValueError, IndexError):
            return None
        scope, key = header.scope, header.key
        if header.encrypted or scope is None or key is None:
            meta = self.sealer.meta(_rid(name), head)
            if meta is None:
                return None
            scope, key = meta
        stored = None
        if header.state is not State.RUNNING and header.payload_offset is not None:
            stored = max(size - header.payload_offset - MAC_BYTES, 0)
        return Entry(
            name=name,
            state=header.state,
            kind=header.kind,
            door=header.door,
            scope=scope.decode("utf-8", "backslashreplace"),
            key=key.decode("utf-8", "backslashreplace"),
            owner=header.token.hex(),
            fingerprint=header.fingerprint.hex(),
            created_ms=header.created_ms,
            finished_ms=header.finished_ms,
            status=header.status,
            ttl_ms=ttl_ms,
            size=size,
            compression=header.compression,
            encrypted=header.encrypted,
            stored_payload=stored,
            original_payload=header.original_payload if header.compression else stored,
            hold_ms=held_ms(head) if len(head) == size else None,
        )

    def _entries(self, heads: Iterable[Any]) -> tuple[list[Entry], int]:
        entries: list[Entry] = []
        unreadable = 0
        for raw in heads:
            entry = self.entry(raw.name, raw.head, raw.ttl_ms, raw.size)
            if entry is None:
                unreadable += 1
            else:
                entries.append(entry)
        return entries, unreadable

    def name_of(self, record_id: str) -> str:
        """The store name of the record shown as ``record_id``; ``ValueError`` if malformed."""
        name: str = self.engine.store.slot(parse_record_id(record_id)).name
        return name

    # -- reading ------------------------------------------------------------------------

    def _selected(
        self, filters: Filters, progress: Progress | None
    ) -> Iterator[tuple[Batch, list[Entry], int, int]]:
        """Each scan batch, the entries in it ``filters`` select, how many of its keys are
        not records, and when (epoch ms) the entries were judged; ``progress`` is told
        once the caller is done with each batch."""
        matched = 0
        for batch, _ in self.scanner.page(None, self.count, self._complete):
            entries, unreadable = self._entries(batch.heads)
            now = now_ms()
            selected = [e for e in entries if filters.matches(e, now)]
            yield batch, selected, unreadable + batch.foreign, now
            matched += len(selected)
            if progress is not None:
                progress(batch.scanned, matched)

    def scan(
        self, filters: Filters = EVERYTHING, progress: Progress | None = None
    ) -> Iterator[Entry]:
        """Every record passing ``filters``, streamed; stop early with ``islice``.

        ``progress(scanned, matched)`` is called after each batch.
        """
        for _, selected, _, _ in self._selected(filters, progress):
            yield from selected

    def page(
        self,
        filters: Filters,
        cursor: str | None,
        size: int,
        *,
        max_scanned: int | None = None,
    ) -> tuple[list[Entry], str | None]:
        """At least ``size`` matching records (whole batches), and the next page's cursor.

        Pages end on batch boundaries, so no record is skipped between pages. With
        ``max_scanned`` a page also ends once that many keys were scanned, so narrow
        filters on a large keyspace answer quickly, with fewer records. ``None`` as the
        next cursor means the scan is over.
        """
        found: list[Entry] = []
        after: str | None = cursor
        for batch, after in self.scanner.page(cursor, self.count, self._complete):
            now = now_ms()
            found.extend(e for e in self._entries(batch.heads)[0] if filters.matches(e, now))
            if after is None or len(found) >= size:
                break
            if max_scanned is not None and batch.scanned >= max_scanned:
                break
        return found, after

    def get(self, name: str) -> Detail | None:
        """The whole record stored under ``name`` (verified and decoded), or ``None``."""
        got = self.scanner.get(name)
        if got is None:
            return None
        raw, ttl_ms = got
        entry = self.entry(name, raw, ttl_ms, len(raw))
        rid = _rid(name)
        if entry is None or rid is None:
            return None
        try:
            record = self.sealer.open(rid, raw)
        except IntegrityError as exc:
            return Detail(entry, False, None, b"", problem=str(exc))
        return Detail(entry, True, *split_body(record))

    def find(self, key: str, scope: str | None = None, kind: str | None = None) -> Iterator[Detail]:
        """The records of client key ``key``.

        With ``scope``: one lookup per kind (HTTP first, then ``run()``), no scan.
        Without: a scan of every record for that key in any scope.
        """
        if scope is not None:
            for k in [Kind(kind)] if kind else [Kind.HTTP, Kind.RUN]:
                detail = self.get(self.engine.slot(k, scope, key).name)
                if detail is not None:
                    yield detail
                    return
            return
        for entry in self.scan(Filters(key=key, kind=kind)):
            detail = self.get(entry.name)
            if detail is not None:
                yield detail

    def entries(self, names: Iterable[str]) -> list[Entry]:
        """The listed records among ``names`` (missing ones are left out)."""
        by_node: dict[int, tuple[Any, list[bytes]]] = {}
        for name in names:
            node = self.scanner.node_for(name)
            by_node.setdefault(id(node), (node, []))[1].append(name.encode())
        found: list[Entry] = []
        for node, keys in by_node.values():
            heads, _ = self.scanner.heads(node, keys, self._complete)
            found.extend(self._entries(heads)[0])
        return found

    # -- counting -----------------------------------------------------------------------

    def stats(
        self,
        filters: Filters = EVERYTHING,
        *,
        sample: int = MEMORY_SAMPLE,
        progress: Progress | None = None,
        each: Callable[[Entry, int], None] | None = None,
    ) -> Stats:
        """Exact counts by state and kind; memory usage of the first ``sample`` records.

        Scans visit records in hash-table order and record names are hashes, so the
        first records met are as good as a random sample. ``each(entry, now)`` is also
        called for every selected record, for counts of its own (see :meth:`dashboard`).
        """
        stats = Stats()
        for batch, selected, unreadable, now in self._selected(filters, progress):
            stats.scanned = batch.scanned
            stats.unreadable += unreadable
            for entry in selected:
                stats.count(entry)
                if each is not None:
                    each(entry, now)
            wanted = selected[: max(sample - stats.memory_sampled, 0)]
            if wanted:
                usage = self.scanner.memory_usage(batch.node, [e.name for e in wanted])
                stats.memory_sampled += len(usage)
                stats.memory_sample_bytes += sum(usage)
        return stats

    def dashboard(
        self,
        filters: Filters = EVERYTHING,
        *,
        ttl_seconds: float,
        progress: Progress | None = None,
    ) -> Dashboard:
        """:meth:`stats` (without the memory sample), records by age and the top scopes.

        One scan, the same as ``stats``: memory stays bounded by the batch size and
        :data:`SCOPE_COUNTERS` (see :class:`TopScopes`), whatever the number of records.
        Age buckets are cut relative to ``ttl_seconds`` (see :func:`age_buckets`).
        """
        board = Dashboard.for_ttl(ttl_seconds)
        board.stats = self.stats(filters, sample=0, progress=progress, each=board.add)
        return board

    # -- purging ------------------------------------------------------------------------

    def purge(
        self,
        selection: Filters | Iterable[Entry] = EVERYTHING,
        *,
        force: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> PurgeResult:
        """Delete every record passing these filters, or these listed entries (from
        :meth:`find` or :meth:`entries`); ``running`` ones only with ``force``.

        Each record is read again just before it goes and is deleted only if it still
        passes the filters (a listed entry: is still the same kind, scope and key) and,
        without ``force``, is not ``running``. With ``dry_run`` nothing is deleted and
        ``deleted`` counts what would be. ``progress`` is told after each scan batch.
        """
        if isinstance(selection, Filters):
            filters = selection

            def still_selected(entry: Entry) -> bool:
                # Ages only grow: a record old enough when selected still is.
                return filters.matches(entry, now_ms())

            batches = (selected for _, selected, _, _ in self._selected(filters, progress))
        else:
            entries = list(selection)
            identity = {e.name: (e.kind, e.scope, e.key) for e in entries}

            def still_selected(entry: Entry) -> bool:
                return identity.get(entry.name) == (entry.kind, entry.scope, entry.key)

            batches = (entries[i : i + self.count] for i in range(0, len(entries), self.count))
        # An abandoned record's owner is gone: deleting it is how an operator lets the next
        # retry run, so it needs no force (as long as that owner still holds it).
        abandoned: set[str] = set()

        def still_wanted(name: str, head: bytes) -> bool:
            entry = self.entry(name, head, None, 0)
            return (
                entry is not None
                and still_selected(entry)
                and (force or entry.state is not State.RUNNING or entry.owner in abandoned)
            )

        result = PurgeResult()
        for batch in batches:
            result.matched += len(batch)
            doomed = [e for e in batch if force or e.state is not State.RUNNING or e.abandoned]
            kept = {e.name for e in batch} - {e.name for e in doomed} - result._running_seen
            result.skipped_running += len(kept)
            result._running_seen |= kept
            abandoned.update(e.owner for e in doomed if e.abandoned)
            if dry_run:
                result.deleted += len(doomed)
                continue
            for node, names in self.scanner.groups([e.name for e in doomed]):
                deleted, changed = self.scanner.delete_checked(
                    node, names, still_wanted, self._complete
                )
                result.deleted += deleted
                result.changed += changed
        return result
