"""Read, count and purge stored records: what ``idempotency_inspect`` and the admin page see.

Everything here streams. Records are found with ``SCAN MATCH <prefix>:{*} COUNT n``
(never ``KEYS``), one batch at a time; each batch is read with one pipelined round
trip of ``GETRANGE 0 599`` (the header and the start of the payload, so bodies are
not pulled) and ``PTTL`` per record (plus ``STRLEN`` for records longer than that),
filtered in Python, yielded and dropped. Memory is bounded by the batch size however
many records exist. On Redis Cluster every primary is scanned in turn, each through
its own node client.

Filters run in Python on the *decoded* header: Redis key names are hashes of door,
scope and key (see :mod:`django_idempotency.store`), so a client's key or a glob of
it can never be a SCAN pattern.

SCAN guarantees every record that exists for the whole scan is returned at least
once; a record written or expiring meanwhile may or may not be seen, and one may be
returned twice if Redis resizes its hash table during the scan. Counts are therefore
exact for a keyspace that does not change while it is counted.

Purging never deletes a record that is ``running`` unless forced: deleting it lets a
retry run the action a second time while the first run may still be going. Each
batch is deleted with ``WATCH``, a fresh read of the headers, then ``MULTI``/``DEL``/
``EXEC``: a record that changed in between (say it expired and a new request claimed
it, so it is now ``running``) aborts the transaction, and the batch is read and
decided again. No Lua is needed; on Cluster a transaction holds the keys of one hash
slot, so there the check runs per record.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import redis
from redis.crc import key_slot

from .store import HTTP_DOOR, RUN_DOOR, RUNNING, STATES, Record, RedisStore, now_ms

#: Bytes read per record for listing: the header plus the start of the payload
#: (an HTTP record's status code). Headers are ~150 bytes with typical keys.
HEAD_BYTES = 600
#: Re-read size for the rare record whose header is longer than :data:`HEAD_BYTES`
#: (very long scopes or keys, percent-encoded).
LONG_HEAD_BYTES = 64 * 1024
#: Default SCAN COUNT: keys per round trip, and the unit of memory use.
SCAN_COUNT = 1000
#: How many records ``stats`` asks ``MEMORY USAGE`` about.
MEMORY_SAMPLE = 1000

DOOR_NAMES = {HTTP_DOOR: "http", RUN_DOOR: "run"}
DOOR_CODES = {name: code for code, name in DOOR_NAMES.items()}

_STATUS = re.compile(rb"\[(\d{3})[,\]]")
_RECORD_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def _bytes(value: Any) -> bytes:
    # A client built with decode_responses=True hands back str.
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as listed: its header fields, status code, TTL and size."""

    redis_key: str
    state: str
    door: str
    scope: str
    key: str
    owner: str
    fingerprint: str
    created_ms: int
    finished_ms: int | None
    #: The stored HTTP status code (``done`` HTTP records only).
    status: int | None
    #: Milliseconds until Redis expires the record; ``None`` when it has no TTL.
    ttl_ms: int | None
    #: Stored bytes (``STRLEN``): header plus payload.
    size: int

    @property
    def record_id(self) -> str:
        """The 22 base64url characters between the braces: the record's stable id in URLs."""
        return self.redis_key[self.redis_key.rindex("{") + 1 : -1]

    @property
    def door_name(self) -> str:
        """``http`` or ``run``."""
        return DOOR_NAMES.get(self.door, self.door)

    def age_ms(self, now: int) -> int:
        """Milliseconds since the record was created."""
        return max(now - self.created_ms, 0)

    def as_dict(self, now: int) -> dict[str, Any]:
        """The listing columns as JSON-ready values (seconds, bytes, ISO-free numbers)."""
        return {
            "scope": self.scope,
            "key": self.key,
            "state": self.state,
            "status": self.status,
            "age_seconds": round(self.age_ms(now) / 1000, 3),
            "ttl_seconds": None if self.ttl_ms is None else round(self.ttl_ms / 1000, 3),
            "size_bytes": self.size,
            "door": self.door_name,
            "created_ms": self.created_ms,
            "finished_ms": self.finished_ms,
            "redis_key": self.redis_key,
        }


@dataclass(frozen=True)
class Detail:
    """A whole record, for ``show`` and the admin detail page."""

    entry: Entry
    payload: bytes
    #: HTTP records: the stored headers as ``[name, value]`` pairs.
    headers: list[tuple[str, str]] | None
    #: HTTP records: the response body; ``run()`` and unreplayable records: the payload.
    body: bytes

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

    def as_dict(self, now: int, preview_bytes: int) -> dict[str, Any]:
        """Every field, with a text preview of the body (``null`` when binary)."""
        doc = self.entry.as_dict(now)
        lease = self.entry.ttl_ms if self.entry.state == RUNNING else None
        doc.update(
            owner=self.entry.owner or None,
            fingerprint=self.entry.fingerprint if self.entry.fingerprint != "-" else None,
            lease_seconds=None if lease is None else round(lease / 1000, 3),
            headers=None if self.headers is None else [list(h) for h in self.headers],
            body_bytes=len(self.body),
            body_preview=self.body_text(preview_bytes),
            body_truncated=len(self.body) > preview_bytes,
        )
        return doc


@dataclass(frozen=True)
class Filters:
    """Which records to select; every field left at its default selects everything."""

    states: frozenset[str] = frozenset()
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
        unknown = set(self.states) - set(STATES)
        if unknown:
            raise ValueError(f"unknown state(s): {', '.join(sorted(unknown))}")
        if self.door is not None and self.door not in DOOR_NAMES:
            raise ValueError(f"unknown door {self.door!r}")

    @property
    def selects_everything(self) -> bool:
        """True when no filter is set."""
        return self == Filters()

    def matches(self, entry: Entry, now: int) -> bool:
        """Whether ``entry`` passes every filter (``now`` in epoch milliseconds)."""
        if self.states and entry.state not in self.states:
            return False
        if self.door is not None and entry.door != self.door:
            return False
        if self.scope is not None and entry.scope != self.scope:
            return False
        if self.key is not None and entry.key != self.key:
            return False
        if self.key_glob is not None and not fnmatch.fnmatchcase(entry.key, self.key_glob):
            return False
        if self.search:
            needle = self.search.casefold()
            if needle not in entry.key.casefold() and needle not in entry.scope.casefold():
                return False
        return self.older_than is None or entry.age_ms(now) > self.older_than * 1000


@dataclass
class Stats:
    """Exact counts of the selected records, plus a sampled memory estimate."""

    scanned: int = 0
    total: int = 0
    by_state: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    by_door: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DOOR_NAMES.values(), 0))
    #: Keys matching the record pattern that are not records (foreign or corrupt).
    unreadable: int = 0
    #: Sum of ``STRLEN``: the stored bytes of every selected record.
    stored_bytes: int = 0
    memory_sampled: int = 0
    memory_sample_bytes: int = 0

    @property
    def memory_average(self) -> float | None:
        """Mean ``MEMORY USAGE`` per sampled record, in bytes."""
        return self.memory_sample_bytes / self.memory_sampled if self.memory_sampled else None

    @property
    def memory_estimate(self) -> int | None:
        """The mean times the number of records: Redis memory held by them, roughly."""
        average = self.memory_average
        return None if average is None else round(average * self.total)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "total": self.total,
            "by_state": dict(self.by_state),
            "by_door": dict(self.by_door),
            "unreadable": self.unreadable,
            "scanned_keys": self.scanned,
            "stored_bytes": self.stored_bytes,
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


#: Called after each SCAN batch with (keys scanned so far, records selected so far).
Progress = Callable[[int, int], None]


@dataclass
class _Batch:
    node: Any
    #: Keys scanned so far, this batch included.
    scanned: int
    entries: list[Entry]
    unreadable: int


class Inventory:
    """Streams, counts and purges the records of one :class:`RedisStore`."""

    def __init__(self, store: RedisStore, *, count: int = SCAN_COUNT) -> None:
        if count <= 0:
            raise ValueError("count must be positive")
        self.store = store
        self.client: Any = store.client
        self.count = count

    # -- topology ------------------------------------------------------------------------

    @property
    def is_cluster(self) -> bool:
        """Whether the client is a ``RedisCluster`` (it has primaries to scan)."""
        return hasattr(self.client, "get_primaries")

    def nodes(self) -> list[Any]:
        """One plain client per primary (Cluster), or the client itself."""
        if self.is_cluster:
            return [self.client.get_redis_connection(n) for n in self.client.get_primaries()]
        return [self.client]

    def _node_for(self, redis_key: str) -> Any:
        if self.is_cluster:
            return self.client.get_redis_connection(self.client.get_node_from_key(redis_key))
        return self.client

    def redis_key(self, record_id: str) -> str:
        """The Redis key of the record with this id; ``ValueError`` for a malformed id."""
        if not _RECORD_ID.fullmatch(record_id):
            raise ValueError(f"not a record id: {record_id!r}")
        return f"{self.store.prefix}:{{{record_id}}}"

    # -- reading -------------------------------------------------------------------------

    def _read_entries(self, node: Any, keys: list[bytes]) -> tuple[list[Entry], int]:
        """Headers and TTLs of ``keys`` in one round trip; also how many were unreadable.

        ``STRLEN`` is asked only of records longer than the read: a shorter read is
        the whole record.
        """
        commands: list[bytes] = []
        for k in keys:
            commands += (_HEAD_COMMAND % (len(k), k), _PTTL_COMMAND % (len(k), k))
        replies = _pipeline(node, commands)
        entries: list[Entry] = []
        long_heads: list[tuple[bytes, int, bytes]] = []
        unreadable = 0
        for i, k in enumerate(keys):
            head, pttl = replies[2 * i], replies[2 * i + 1]
            if isinstance(head, Exception) or isinstance(pttl, Exception):
                unreadable += 1  # not a string: someone else's key under our prefix
                continue
            if pttl == -2 or not head:
                continue  # expired or deleted since SCAN returned it
            head = _bytes(head)
            if len(head) == HEAD_BYTES:
                long_heads.append((k, int(pttl), head))
                continue
            entry = _entry(k.decode(), head, int(pttl), len(head))
            if entry is None:
                unreadable += 1
            else:
                entries.append(entry)
        if long_heads:
            # Longer records: their size, and (rarely) a longer read for a long header.
            commands = []
            for k, _, head in long_heads:
                commands.append(_command(b"STRLEN", k))
                if not _complete_head(head):
                    commands.append(_getrange(k, LONG_HEAD_BYTES))
            more = iter(_pipeline(node, commands))
            for k, pttl, head in long_heads:
                size = next(more)
                if not _complete_head(head):
                    head = next(more)
                entry = (
                    None
                    if isinstance(head, Exception) or isinstance(size, Exception)
                    else _entry(k.decode(), _bytes(head), pttl, int(size))
                )
                if entry is None:
                    unreadable += 1
                else:
                    entries.append(entry)
        return entries, unreadable

    def _batches(self) -> Iterator[_Batch]:
        """Every record, one SCAN batch at a time, node after node."""
        pattern = self.store.record_pattern
        scanned = 0
        for node in self.nodes():
            cursor: int = 0
            while True:
                cursor, raw_keys = node.scan(cursor=cursor, match=pattern, count=self.count)
                keys = [_bytes(k) for k in raw_keys]
                entries, unreadable = self._read_entries(node, keys) if keys else ([], 0)
                scanned += len(keys)
                yield _Batch(node, scanned, entries, unreadable)
                if int(cursor) == 0:
                    break

    def scan(
        self, filters: Filters = Filters(), progress: Progress | None = None
    ) -> Iterator[Entry]:
        """Every record passing ``filters``, streamed; stop early with ``islice``.

        ``progress(scanned, matched)`` is called after each SCAN batch.
        """
        matched = 0
        for batch in self._batches():
            now = now_ms()
            for entry in batch.entries:
                if filters.matches(entry, now):
                    matched += 1
                    yield entry
            if progress is not None:
                progress(batch.scanned, matched)

    def page(
        self,
        filters: Filters,
        cursor: str | None,
        size: int,
        *,
        max_scanned: int | None = None,
    ) -> tuple[list[Entry], str | None]:
        """At least ``size`` matching records (whole SCAN batches), and the next page's cursor.

        Pages end on batch boundaries, so no record is skipped between pages. With
        ``max_scanned`` a page also ends once that many keys were scanned, so narrow
        filters on a large keyspace answer quickly, with fewer records. The cursor is
        ``"<node index>-<SCAN cursor>"``; ``None`` means the scan is over.
        """
        node_index, scan_cursor = 0, 0
        if cursor:
            try:
                left, _, right = cursor.partition("-")
                node_index, scan_cursor = int(left), int(right)
            except ValueError:
                raise ValueError(f"bad page cursor {cursor!r}") from None
        nodes = self.nodes()
        pattern = self.store.record_pattern
        found: list[Entry] = []
        scanned = 0
        while node_index < len(nodes) and len(found) < size:
            if max_scanned is not None and scanned >= max_scanned:
                break
            node = nodes[node_index]
            scan_cursor, raw_keys = node.scan(cursor=scan_cursor, match=pattern, count=self.count)
            scan_cursor = int(scan_cursor)
            scanned += len(raw_keys)
            if raw_keys:
                entries, _ = self._read_entries(node, [_bytes(k) for k in raw_keys])
                now = now_ms()
                found.extend(e for e in entries if filters.matches(e, now))
            if scan_cursor == 0:
                node_index += 1
        if node_index >= len(nodes):
            return found, None
        return found, f"{node_index}-{scan_cursor}"

    def get(self, redis_key: str) -> Detail | None:
        """The whole record stored under ``redis_key``, or ``None``."""
        node = self._node_for(redis_key)
        pipe = node.pipeline(transaction=False)
        pipe.get(redis_key)
        pipe.pttl(redis_key)
        raw, pttl = pipe.execute()
        if raw is None:
            return None
        raw = _bytes(raw)
        entry = _entry(redis_key, raw, int(pttl), len(raw))
        if entry is None:
            return None
        return _detail(entry, Record.parse(raw).payload)

    def find(self, key: str, scope: str | None = None, door: str | None = None) -> Iterator[Detail]:
        """The records of client key ``key``.

        With ``scope``: one lookup per door (HTTP first, then ``run()``), no scan.
        Without: a scan of every record for that key in any scope.
        """
        if scope is not None:
            for code in [door] if door else [HTTP_DOOR, RUN_DOOR]:
                detail = self.get(self.store.slot(code, scope, key).record_key)
                if detail is not None:
                    yield detail
                    return
            return
        for entry in self.scan(Filters(key=key, door=door)):
            detail = self.get(entry.redis_key)
            if detail is not None:
                yield detail

    def entries(self, redis_keys: Iterable[str]) -> list[Entry]:
        """The listed records among ``redis_keys`` (missing ones are left out)."""
        by_node: dict[int, tuple[Any, list[str]]] = {}
        for k in redis_keys:
            node = self._node_for(k)
            by_node.setdefault(id(node), (node, []))[1].append(k)
        found: list[Entry] = []
        for node, keys in by_node.values():
            found.extend(self._read_entries(node, [k.encode() for k in keys])[0])
        return found

    # -- counting ------------------------------------------------------------------------

    def stats(
        self,
        filters: Filters = Filters(),
        *,
        sample: int = MEMORY_SAMPLE,
        progress: Progress | None = None,
    ) -> Stats:
        """Exact counts by state and door; ``MEMORY USAGE`` of the first ``sample`` records.

        SCAN visits records in hash-table order and record names are hashes, so the
        first records met are as good as a random sample.
        """
        stats = Stats()
        for batch in self._batches():
            stats.scanned = batch.scanned
            stats.unreadable += batch.unreadable
            now = now_ms()
            selected = [e for e in batch.entries if filters.matches(e, now)]
            for entry in selected:
                stats.total += 1
                stats.by_state[entry.state] = stats.by_state.get(entry.state, 0) + 1
                stats.by_door[entry.door_name] = stats.by_door.get(entry.door_name, 0) + 1
                stats.stored_bytes += entry.size
            if progress is not None:
                progress(stats.scanned, stats.total)
            wanted = selected[: max(sample - stats.memory_sampled, 0)]
            if wanted:
                pipe = batch.node.pipeline(transaction=False)
                for entry in wanted:
                    pipe.memory_usage(entry.redis_key)
                for usage in pipe.execute(raise_on_error=False):
                    if isinstance(usage, int):
                        stats.memory_sampled += 1
                        stats.memory_sample_bytes += usage
        return stats

    # -- purging -------------------------------------------------------------------------

    def purge(
        self,
        filters: Filters = Filters(),
        *,
        force: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> PurgeResult:
        """Delete every record passing ``filters``; ``running`` ones only with ``force``.

        With ``dry_run`` nothing is deleted and ``deleted`` counts what would be.
        """
        result = PurgeResult()
        for batch in self._batches():
            now = now_ms()

            def still_matches(entry: Entry, now: int = now) -> bool:
                return filters.matches(entry, now)

            selected = [e for e in batch.entries if still_matches(e)]
            self._purge_entries(selected, still_matches, force, dry_run, result)
            if progress is not None:
                progress(batch.scanned, result.matched)
        return result

    def purge_entries(
        self, entries: Iterable[Entry], *, force: bool = False, dry_run: bool = False
    ) -> PurgeResult:
        """Delete these records (by key, from ``find`` or ``entries``), re-checked as above.

        A record is deleted only if, re-read under ``WATCH``, it is still the same
        door, scope and key and (without ``force``) not ``running``.
        """
        result = PurgeResult()
        chunk: list[Entry] = []
        for entry in entries:
            chunk.append(entry)
            if len(chunk) >= self.count:
                self._purge_entries(chunk, _same_record(chunk), force, dry_run, result)
                chunk = []
        if chunk:
            self._purge_entries(chunk, _same_record(chunk), force, dry_run, result)
        return result

    def _purge_entries(
        self,
        entries: list[Entry],
        still_wanted: Callable[[Entry], bool],
        force: bool,
        dry_run: bool,
        result: PurgeResult,
    ) -> None:
        result.matched += len(entries)
        doomed = [e for e in entries if force or e.state != RUNNING]
        if len(doomed) < len(entries):
            kept = {e.redis_key for e in entries if e.state == RUNNING} - result._running_seen
            result.skipped_running += len(kept)
            result._running_seen |= kept
        if dry_run:
            result.deleted += len(doomed)
            return

        def wanted(entry: Entry) -> bool:
            return still_wanted(entry) and (force or entry.state != RUNNING)

        for node, group in self._transaction_groups(doomed):
            deleted, changed = self._delete_checked(node, group, wanted)
            result.deleted += deleted
            result.changed += changed

    def _transaction_groups(self, entries: list[Entry]) -> Iterator[tuple[Any, list[str]]]:
        # One transaction may span the keys of one node (plain Redis) but, on Cluster,
        # only those of one hash slot: there, every record is its own group.
        if not entries:
            return
        if not self.is_cluster:
            yield self.client, [e.redis_key for e in entries]
            return
        by_slot: dict[int, list[str]] = {}
        for entry in entries:
            by_slot.setdefault(key_slot(entry.redis_key.encode()), []).append(entry.redis_key)
        for keys in by_slot.values():
            yield self._node_for(keys[0]), keys

    def _delete_checked(
        self, node: Any, keys: list[str], wanted: Callable[[Entry], bool]
    ) -> tuple[int, int]:
        """Delete those of ``keys`` that ``wanted`` still accepts when read under WATCH.

        Returns (deleted, changed). A batch whose WATCH fires is split and retried, so
        steady writes to some records cannot starve the others.
        """
        deleted = changed = 0
        work: list[tuple[list[str], int]] = [(keys, 0)]
        while work:
            group, attempt = work.pop()
            try:
                outcome = self._delete_once(node, group, wanted)
            except redis.exceptions.WatchError:
                if len(group) > 1:
                    half = len(group) // 2
                    work += [(group[:half], 0), (group[half:], 0)]
                elif attempt < 5:
                    work.append((group, attempt + 1))
                else:
                    changed += 1  # rewritten on every attempt: leave it alone
                continue
            deleted += outcome[0]
            changed += outcome[1]
        return deleted, changed

    def _delete_once(
        self, node: Any, keys: list[str], wanted: Callable[[Entry], bool]
    ) -> tuple[int, int]:
        with node.pipeline(transaction=True) as pipe:
            pipe.watch(*keys)
            # The reads must share the watching connection, in one round trip: below
            # redis-py's immediate mode, straight on that connection.
            conn = pipe.connection
            heads = _send(conn, [_HEAD_COMMAND % (len(k), k.encode()) for k in keys])
            long = [i for i, h in enumerate(heads) if isinstance(h, bytes) and _is_cut(h)]
            if long:
                longer = _send(conn, [_getrange(keys[i].encode(), LONG_HEAD_BYTES) for i in long])
                for i, head in zip(long, longer, strict=True):
                    heads[i] = head
            confirmed: list[str] = []
            changed = 0
            for k, head in zip(keys, heads, strict=True):
                if isinstance(head, Exception) or not head:
                    continue  # gone already (expired, or a SCAN duplicate we deleted)
                entry = _entry(k, _bytes(head), None, 0)
                if entry is not None and wanted(entry):
                    confirmed.append(k)
                else:
                    changed += 1
            if not confirmed:
                return 0, changed
            pipe.multi()
            pipe.delete(*confirmed)
            (deleted,) = pipe.execute()
        return int(deleted), changed


def _is_cut(head: bytes) -> bool:
    """Whether a ``HEAD_BYTES`` read stopped inside the header line."""
    return len(head) == HEAD_BYTES and b"\n" not in head


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h``, ``2d`` or ``1w``; ``ValueError`` else."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h, 2d, 1w)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def human_duration(ms: int | None) -> str:
    """``850ms``, ``42s``, ``3m12s``, ``5h03m``, ``2d04h``; ``none`` for ``None``."""
    if ms is None:
        return "none"
    if ms < 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 in UTC (``2026-01-31T12:00:00.123+00:00``)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def human_bytes(n: int | float | None) -> str:
    """``812 B``, ``1.2 KiB``, ``3.4 MiB``..."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _command(*args: bytes) -> bytes:
    """One command in RESP, the protocol's own encoding."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _getrange(key: bytes, length: int) -> bytes:
    return _command(b"GETRANGE", key, b"0", b"%d" % (length - 1))


# The two commands sent per listed record, as templates: they are most of the traffic.
_HEAD_COMMAND = _getrange(b"%b", HEAD_BYTES).replace(b"$2\r\n%b", b"$%d\r\n%b")
_PTTL_COMMAND = _command(b"PTTL", b"%b").replace(b"$2\r\n%b", b"$%d\r\n%b")


def _pipeline(node: Any, commands: list[bytes]) -> list[Any]:
    """Send pre-encoded commands in one write; return every reply (errors as exceptions).

    Listing reads two replies per record, so redis-py's per-command pipeline
    bookkeeping would be most of the cost; encoding ourselves halves it.
    """
    if not commands:
        return []
    pool = node.connection_pool
    try:
        conn = pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        conn = pool.get_connection("GETRANGE")
    try:
        return _send(conn, commands)
    except BaseException:
        # Replies may be left unread on the socket: never hand it back as it is.
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _send(conn: Any, commands: list[bytes]) -> list[Any]:
    """Write ``commands`` (one RESP command each) at once, then read one reply per command."""
    conn.send_packed_command([b"".join(commands)])
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(conn.read_response())
        except redis.exceptions.ResponseError as exc:
            replies.append(exc)
    return replies


def _same_record(entries: list[Entry]) -> Callable[[Entry], bool]:
    identity = {e.redis_key: (e.door, e.scope, e.key) for e in entries}
    return lambda e: identity.get(e.redis_key) == (e.door, e.scope, e.key)


def _complete_head(head: bytes) -> bool:
    """Whether a truncated read holds the whole header (and an HTTP status, if any)."""
    line, nl, rest = head.partition(b"\n")
    if not nl:
        return False
    # "<state> <owner> <fp> <t0> <t1> h ..." with state done: the payload starts "[201,".
    return not (line.startswith(b"done ") and b" h " in line and len(rest) < 5)


def _entry(redis_key: str, head: bytes, pttl: int | None, size: int) -> Entry | None:
    """An :class:`Entry` from the start of a record, or ``None`` when it is not one."""
    if b"\n" not in head:
        return None
    try:
        # The payload parsed here is only the part of it that was read.
        record = Record.parse(head)
    except (ValueError, UnicodeDecodeError):
        return None
    status = None
    if record.door == HTTP_DOOR and record.state != RUNNING:
        match = _STATUS.match(record.payload)
        status = int(match.group(1)) if match else None
    return Entry(
        redis_key=redis_key,
        state=record.state,
        door=record.door,
        scope=record.scope,
        key=record.key,
        owner="" if record.owner == "-" else record.owner,
        fingerprint=record.fingerprint,
        created_ms=record.created_ms,
        finished_ms=record.finished_ms,
        status=status,
        ttl_ms=None if pttl is None or pttl < 0 else pttl,
        size=size,
    )


def _detail(entry: Entry, payload: bytes) -> Detail:
    if entry.door == HTTP_DOOR and entry.status is not None:
        head, _, body = payload.partition(b"\n")
        try:
            _, headers = json.loads(head)
            pairs = [(str(name), str(value)) for name, value in headers]
        except (ValueError, TypeError):
            return Detail(entry, payload, None, payload)
        return Detail(entry, payload, pairs, body)
    return Detail(entry, payload, None, payload)
