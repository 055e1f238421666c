"""The Redis side of ``idempotency_inspect`` and the admin: SCAN, head reads, checked deletes.

Records are found with ``SCAN MATCH <prefix>:{*} COUNT n`` (never ``KEYS``), node after
node on Redis Cluster, and each batch is read with one pipelined round trip of ``GETRANGE
0 <n-1>`` (the record's start: header, fingerprint and meta, not the body) and ``PTTL``,
and one more for the records longer than that. These commands are encoded here (RESP) and
sent in one write: redis-py's per-command pipeline bookkeeping would be most of the cost.

A delete never removes a record that changed since it was judged: each group is re-read
on the connection that ``WATCH``es it and deleted in ``MULTI``/``EXEC``. A group whose
``WATCH`` fires is split and tried again, so steady writes to some records cannot starve
the others. On Cluster a transaction holds one hash slot's keys: a group per slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from redis.crc import key_slot

from ..base import Batch, Complete, RawHead, StoreError, Wanted
from .connection import CHECKOUT_ARGS
from .store import RedisStore, raw, record_pattern, send_all, translate

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


def _read(
    conn: Any, names: Sequence[bytes], complete: Complete, listing: bool
) -> list[tuple[Any, Any, Any]]:
    """``(first bytes, PTTL, size)`` of each record, errors as values, in two round trips
    at most: :data:`HEAD_BYTES` of each, then, of those cut there, the size and up to
    :data:`LONG_HEAD_BYTES` where ``complete`` says the first read falls short. A delete's
    re-read (``listing`` false) asks no PTTL or size: it needs the bytes only."""
    per_record = [_HEAD_COMMAND, _PTTL_COMMAND] if listing else [_HEAD_COMMAND]
    replies = send_all(conn, [c % (len(k), k) for k in names for c in per_record])
    heads = replies[:: len(per_record)]
    pttls = replies[1::2] if listing else [None] * len(names)
    sizes = [len(h) if isinstance(h, bytes) else 0 for h in heads]
    cut = [i for i, h in enumerate(heads) if isinstance(h, bytes) and len(h) == HEAD_BYTES]
    short = [i for i in cut if not complete(heads[i])]
    more = [_command(b"STRLEN", names[i]) for i in cut] if listing else []
    further = iter(send_all(conn, more + [_getrange(names[i], LONG_HEAD_BYTES) for i in short]))
    if listing:
        for i in cut:
            sizes[i] = next(further)
    for i in short:
        heads[i] = next(further)
    return list(zip(heads, pttls, sizes, strict=True))


@contextlib.contextmanager
def _connection(node: Any) -> Iterator[Any]:
    """One of ``node``'s connections, closed rather than handed back if replies may be
    left unread on it; Redis errors raised meanwhile, as the store's own."""
    pool = node.connection_pool
    conn = pool.get_connection(*CHECKOUT_ARGS)
    try:
        with _translated():
            yield conn
    except BaseException:
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

    def node_for(self, name: str) -> Any:
        """The client of the node that holds key ``name``."""
        if self.store.cluster:
            return self.client.get_redis_connection(self.client.get_node_from_key(name))
        return self.client

    # -- reading ------------------------------------------------------------------------

    def heads(
        self, node: Any, names: Sequence[bytes], complete: Complete
    ) -> tuple[list[RawHead], int]:
        """The start, TTL and size of each record (see :func:`_read`), and how many of
        the keys are not strings."""
        with _connection(node) as conn:
            read = _read(conn, names, complete, listing=True)
        found: list[RawHead] = []
        foreign = 0
        for k, (head, pttl, size) in zip(names, read, strict=True):
            if any(isinstance(r, Exception) for r in (head, pttl, size)):
                foreign += 1
            elif pttl != -2 and head:  # else expired or deleted since SCAN returned it
                found.append(RawHead(k.decode(), raw(head), _ttl(int(pttl)), int(size)))
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
        nodes = [self.client]
        if self.store.cluster:  # one plain client per primary
            nodes = [self.client.get_redis_connection(n) for n in self.client.get_primaries()]
        scanned = 0
        while node_index < len(nodes):
            node = nodes[node_index]
            with _translated():
                after_scan, raw_keys = node.scan(
                    cursor=scan_cursor, match=self.pattern, count=count
                )
            scan_cursor = int(after_scan)
            keys = [raw(k) for k in raw_keys]
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
            record, pttl = pipe.execute()
        return None if record is None else (raw(record), _ttl(int(pttl)))

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
            # The reads must share the watching connection: below redis-py's immediate
            # mode, straight on that connection.
            read = _read(pipe.connection, [n.encode() for n in names], complete, listing=False)
            confirmed: list[str] = []
            changed = 0
            for name, (head, _, _) in zip(names, read, strict=True):
                if isinstance(head, Exception) or not head:
                    continue  # gone already (expired, or a SCAN duplicate we deleted)
                if still_wanted(name, raw(head)):
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
