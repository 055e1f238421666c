"""The Redis side of ``idempotency_inspect`` and the admin: SCAN, head reads, checked deletes.

Everything streams. Records are found with ``SCAN MATCH <prefix>:{*} COUNT n`` (never
``KEYS``), one batch at a time; each batch is read with one pipelined round trip of
``GETRANGE 0 <n-1>`` (the record's start: header, fingerprint and meta, not the body)
and ``PTTL`` per record, plus ``STRLEN`` for records longer than that. On Redis
Cluster every primary is scanned in turn, through its own node client.

Deletes never remove a record that changed since it was judged: each group is deleted
under ``WATCH``, after a fresh read of the heads on the watching connection, in
``MULTI``/``EXEC``. A group whose ``WATCH`` fires is split and tried again, so steady
writes to some records cannot starve the others. On Cluster a transaction holds the
keys of one hash slot, so there every record is its own group.

The listing commands are encoded here (RESP) and sent in one write: redis-py's
per-command pipeline bookkeeping would be most of the cost of a scan.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
from redis.crc import key_slot

from ..base import Batch, RawHead, StoreError
from .connection import CHECKOUT_ARGS
from .store import RedisStore, record_pattern, translate

#: Whether a record's first bytes hold all that listing it needs.
Complete = Callable[[bytes], bool]
#: Whether a record (name, first bytes), read again just before deleting it, may go.
Wanted = Callable[[str, bytes], bool]
#: Bytes read per record for listing: header, fingerprint, meta and the payload's start.
HEAD_BYTES = 600
#: Re-read size for the rare record whose meta is longer than :data:`HEAD_BYTES`.
LONG_HEAD_BYTES = 64 * 1024


def _command(*args: bytes) -> bytes:
    """One command in RESP, the protocol's own encoding."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _getrange(key: bytes, length: int) -> bytes:
    return _command(b"GETRANGE", key, b"0", b"%d" % (length - 1))


# The two commands sent per listed record, as templates: they are most of the traffic.
_HEAD_COMMAND = _getrange(b"%b", HEAD_BYTES).replace(b"$2\r\n%b", b"$%d\r\n%b")
_PTTL_COMMAND = _command(b"PTTL", b"%b").replace(b"$2\r\n%b", b"$%d\r\n%b")


def _bytes(value: Any) -> bytes:
    # A client built with decode_responses=True hands back str.
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


def _send(conn: Any, commands: list[bytes]) -> list[Any]:
    """Write ``commands`` at once, then read one reply per command (errors as values)."""
    conn.send_packed_command([b"".join(commands)])
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(conn.read_response(disable_decoding=True))
        except redis.exceptions.ResponseError as exc:
            replies.append(exc)
    return replies


def _pipeline(node: Any, commands: list[bytes]) -> list[Any]:
    if not commands:
        return []
    pool = node.connection_pool
    conn = pool.get_connection(*CHECKOUT_ARGS)
    try:
        return _send(conn, commands)
    except BaseException:
        # Replies may be left unread on the socket: never hand it back as it is.
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Redis errors raised inside, as the store's own errors."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise translate(exc) from exc


class RedisScanner:
    """Scans, reads and deletes the records of one :class:`RedisStore`."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.client: Any = store.client
        self.pattern = record_pattern(store.prefix)

    # -- topology -----------------------------------------------------------------------

    def nodes(self) -> list[Any]:
        """One plain client per primary (Cluster), or the client itself."""
        if self.store.cluster:
            return [self.client.get_redis_connection(n) for n in self.client.get_primaries()]
        return [self.client]

    def node_for(self, name: str) -> Any:
        """The client of the node that holds key ``name``."""
        if self.store.cluster:
            return self.client.get_redis_connection(self.client.get_node_from_key(name))
        return self.client

    # -- reading ------------------------------------------------------------------------

    def heads(
        self, node: Any, names: Sequence[bytes], complete: Complete
    ) -> tuple[list[RawHead], int]:
        """The start, TTL and size of each record in one or two round trips.

        ``complete(head)`` says whether a :data:`HEAD_BYTES` read of a longer record
        holds everything listing needs; if not, up to :data:`LONG_HEAD_BYTES` are read.
        Returns the heads and how many keys were not strings.
        """
        with _translated():
            commands: list[bytes] = []
            for k in names:
                commands += (_HEAD_COMMAND % (len(k), k), _PTTL_COMMAND % (len(k), k))
            replies = _pipeline(node, commands)
            found: list[RawHead] = []
            long: list[tuple[bytes, int, bytes]] = []
            foreign = 0
            for i, k in enumerate(names):
                head, pttl = replies[2 * i], replies[2 * i + 1]
                if isinstance(head, Exception) or isinstance(pttl, Exception):
                    foreign += 1
                    continue
                if pttl == -2 or not head:
                    continue  # expired or deleted since SCAN returned it
                head = _bytes(head)
                if len(head) == HEAD_BYTES:
                    long.append((k, int(pttl), head))
                    continue
                found.append(RawHead(k.decode(), head, _ttl(int(pttl)), len(head)))
            if long:
                commands = []
                for k, _, head in long:
                    commands.append(_command(b"STRLEN", k))
                    if not complete(head):
                        commands.append(_getrange(k, LONG_HEAD_BYTES))
                more = iter(_pipeline(node, commands))
                for k, pttl, head in long:
                    size = next(more)
                    if not complete(head):
                        head = next(more)
                    if isinstance(size, Exception) or isinstance(head, Exception):
                        foreign += 1
                        continue
                    found.append(RawHead(k.decode(), _bytes(head), _ttl(pttl), int(size)))
        return found, foreign

    def page(
        self, cursor: str | None, count: int, complete: Complete
    ) -> Iterator[tuple[Batch, str | None]]:
        """SCAN batches from ``cursor`` (``None``: the start) on, node after node, each
        with the cursor after it: ``"<node index>-<SCAN cursor>"``, ``None`` at the end."""
        node_index, scan_cursor = 0, 0
        if cursor:
            try:
                left, _, right = cursor.partition("-")
                node_index, scan_cursor = int(left), int(right)
            except ValueError:
                raise ValueError(f"bad page cursor {cursor!r}") from None
        nodes = self.nodes()
        scanned = 0
        while node_index < len(nodes):
            node = nodes[node_index]
            with _translated():
                after_scan, raw_keys = node.scan(
                    cursor=scan_cursor, match=self.pattern, count=count
                )
            scan_cursor = int(after_scan)
            keys = [_bytes(k) for k in raw_keys]
            heads, foreign = self.heads(node, keys, complete) if keys else ([], 0)
            scanned += len(keys)
            if scan_cursor == 0:
                node_index += 1
            after = None if node_index >= len(nodes) else f"{node_index}-{scan_cursor}"
            yield Batch(node, scanned, heads, foreign), after

    def get(self, name: str) -> tuple[bytes, int | None] | None:
        """The whole record under ``name`` and its TTL, or ``None``."""
        with _translated():
            pipe = self.node_for(name).pipeline(transaction=False)
            pipe.get(name)
            pipe.pttl(name)
            raw, pttl = pipe.execute()
        return None if raw is None else (_bytes(raw), _ttl(int(pttl)))

    def memory_usage(self, node: Any, names: Sequence[str]) -> list[int]:
        """``MEMORY USAGE`` of each record that still exists."""
        with _translated():
            pipe = node.pipeline(transaction=False)
            for name in names:
                pipe.memory_usage(name)
            return [u for u in pipe.execute(raise_on_error=False) if isinstance(u, int)]

    # -- deleting -----------------------------------------------------------------------

    def groups(self, names: Sequence[str]) -> Iterator[tuple[Any, list[str]]]:
        """The names grouped so each group can be deleted in one transaction."""
        if not names:
            return
        if not self.store.cluster:
            yield self.client, list(names)
            return
        by_slot: dict[int, list[str]] = {}
        for name in names:
            by_slot.setdefault(key_slot(name.encode()), []).append(name)
        for keys in by_slot.values():
            yield self.node_for(keys[0]), keys

    def delete_checked(
        self, node: Any, names: list[str], still_wanted: Wanted, complete: Complete
    ) -> tuple[int, int]:
        """Delete those of ``names`` that ``still_wanted(name, head)`` accepts on a fresh read.

        Returns (deleted, changed): changed counts records left alone because they were
        gone, no longer wanted, or rewritten on every attempt.
        """
        deleted = changed = 0
        work: list[tuple[list[str], int]] = [(names, 0)]
        while work:
            group, attempt = work.pop()
            try:
                with _translated():
                    outcome = self._delete_once(node, group, still_wanted, complete)
            except StoreError as exc:
                if not isinstance(exc.__cause__, redis.exceptions.WatchError):
                    raise
                if len(group) > 1:
                    half = len(group) // 2
                    work += [(group[:half], 0), (group[half:], 0)]
                elif attempt < 5:
                    work.append((group, attempt + 1))
                else:
                    changed += 1
                continue
            deleted += outcome[0]
            changed += outcome[1]
        return deleted, changed

    def _delete_once(
        self, node: Any, names: list[str], still_wanted: Wanted, complete: Complete
    ) -> tuple[int, int]:
        with node.pipeline(transaction=True) as pipe:
            pipe.watch(*names)
            # The reads must share the watching connection, in one round trip: below
            # redis-py's immediate mode, straight on that connection.
            conn = pipe.connection
            heads = _send(conn, [_HEAD_COMMAND % (len(n), n.encode()) for n in names])
            long = [
                i
                for i, h in enumerate(heads)
                if isinstance(h, bytes) and len(h) == HEAD_BYTES and not complete(h)
            ]
            if long:
                longer = _send(conn, [_getrange(names[i].encode(), LONG_HEAD_BYTES) for i in long])
                for i, head in zip(long, longer, strict=True):
                    heads[i] = head
            confirmed: list[str] = []
            changed = 0
            for name, head in zip(names, heads, strict=True):
                if isinstance(head, Exception) or not head:
                    continue  # gone already (expired, or a SCAN duplicate we deleted)
                if still_wanted(name, _bytes(head)):
                    confirmed.append(name)
                else:
                    changed += 1
            if not confirmed:
                return 0, changed
            pipe.multi()
            pipe.delete(*confirmed)
            (deleted,) = pipe.execute()
        return int(deleted), changed


def _ttl(pttl: int) -> int | None:
    return None if pttl < 0 else pttl
