"""The blocking Redis store: claim, complete, release and renew, one script call each.

See :mod:`.scripts` for the key layout and each script's contract. On a plain Redis
(a URL, a django-redis alias, a Sentinel ``master_for`` client) the script calls are
encoded here and sent on a connection of the client's own pool, under the client's own
retry policy; on Redis Cluster they go through ``RedisCluster.execute_command``, which
routes them by key.

Sentinel: after a failover a pooled connection may still point at the demoted primary,
which refuses writes (``READONLY``). Every script's first write is the one refused, so
nothing was written: the idle connections are dropped (the next one asks the Sentinel
for the new primary) and the command is sent once more. A retried claim that finds its
own running record, or a retried completion that finds its own final record, counts as
done: the first attempt went through and only its reply was lost.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis
from redis.client import NEVER_DECODE

from ...records import TOKEN_SLICE
from ..base import ClaimReply, Slot, StoreBusy, StoreError, StoreFull, StoreUnavailable
from ..base import record_name as key_name  # the Redis key of a record
from .connection import CHECKOUT_ARGS, is_cluster
from .notifier import RedisNotifier
from .scripts import CLAIM, COMPLETE, RELEASE, RENEW, Script

if TYPE_CHECKING:
    from .aio import AsyncRedisStore

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Connections the fast path keeps checked out of the client's pool between calls, at
#: most (see :func:`kept_at_most`).
_KEEP_IDLE = 2


def record_pattern(prefix: str) -> str:
    """The SCAN MATCH pattern selecting every record under ``prefix``."""
    return f"{prefix}:{{*}}"


def channel_name(prefix: str) -> str:
    """The pub/sub channel completions under ``prefix`` are announced on."""
    return f"{prefix}:notify"


def kept_at_most(pool: Any, most: int) -> int:
    """How many connections a store keeps out of ``pool`` between calls: ``most``, and
    only from a pool of at least 16, so the rest of the application always finds the
    pool as it sized it (and a caller queued at it never waits behind kept ones)."""
    return most if (getattr(pool, "max_connections", 0) or 0) >= 16 else 0


def demoted(exc: BaseException) -> bool:
    """Whether ``exc`` is a read-only replica refusing a write: the server was demoted.

    Redis 6 reports a write refused inside a script as a script error quoting
    ``-READONLY``; redis-py's Sentinel connection turns a plain ``READONLY`` reply into
    a ``ConnectionError``.
    """
    if isinstance(exc, redis.exceptions.ConnectionError):
        return isinstance(exc.__context__, redis.exceptions.ReadOnlyError)
    return isinstance(exc, redis.exceptions.ResponseError) and "READONLY" in str(exc)


def translate(exc: redis.exceptions.RedisError) -> StoreError:
    """The neutral store error for a redis-py error."""
    text = str(exc)
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in text:
        return StoreFull(
            "Redis is at maxmemory and refuses writes (maxmemory-policy noeviction): no "
            "idempotency record can be created or stored until memory is freed or "
            "maxmemory is raised"
        )
    busy = getattr(redis.exceptions, "MaxConnectionsError", ())
    if (busy and isinstance(exc, busy)) or text in (
        "Too many connections",
        "No connection available.",
    ):
        return StoreBusy(text)
    return StoreUnavailable(text or type(exc).__name__)


def claim_reply(reply: Any, running: bytes) -> ClaimReply:
    """Decode the claim script's reply (see :mod:`.scripts`) to a claim of ``running``."""
    if isinstance(reply, int):
        return ClaimReply(None)
    record, left = (raw(reply[0]), int(reply[1])) if isinstance(reply, list) else (raw(reply), 0)
    if record[TOKEN_SLICE] == running[TOKEN_SLICE]:
        return ClaimReply(None)  # a retried claim whose first reply was lost found its own
    return ClaimReply(record, max(left, 0))


def get_command(key: bytes) -> bytes:
    """``GET <key>`` encoded as RESP (the scripts' calls are packed by hand too)."""
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key)


def send_all(conn: Any, packed: Sequence[bytes], *, raise_error: bool = False) -> list[Any]:
    """Write encoded commands at once, then read one reply each, errors as values (or the
    first raised, with ``raise_error``): every reply is read, so the connection stays in
    step."""
    if not packed:
        return []
    conn.send_packed_command([packed[0] if len(packed) == 1 else b"".join(packed)])
    replies: list[Any] = []
    error: redis.exceptions.ResponseError | None = None
    for _ in packed:
        try:
            replies.append(conn.read_response(disable_decoding=True))
        except redis.exceptions.ResponseError as exc:
            error = error or exc
            replies.append(exc)
    if raise_error and error is not None:
        raise error
    return replies


def raw(value: Any) -> bytes:
    """A reply as bytes (a client built with ``decode_responses=True`` hands back str)."""
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def millis(value: int) -> bytes:
    """A TTL or lease argument: whole milliseconds, at least 1."""
    return b"%d" % max(value, 1)


class RedisStore:
    """Record operations on one Redis (or Cluster), for one key prefix."""

    def __init__(
        self, client: Any, prefix: str, *, async_client: Callable[[], Any] | None = None
    ) -> None:
        self.client = client
        self._async_client = async_client
        self._aio: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedisStore] = (
            weakref.WeakKeyDictionary()
        )
        self.prefix = prefix
        self.channel = channel_name(prefix)
        self._channel = self.channel.encode()
        self.cluster = is_cluster(client)
        # The fast path needs the client's own pool; RedisCluster has one per node.
        self._pool: Any = None if self.cluster else client.connection_pool
        # Checking a connection out of redis-py's pool costs about as much as encoding
        # and parsing a script call: a lock, a pid check and a non-blocking read of the
        # socket to make sure it holds no stale reply. The fast path keeps the one or
        # two connections it just used (they hold no stale reply: a call that did not
        # read its replies disconnects) and checks the pool again only after a fork.
        self._keep = kept_at_most(self._pool, _KEEP_IDLE)
        self._idle: list[Any] = []
        #: The process the kept connections and asyncio clients belong to.
        self._pid = os.getpid()
        #: The process-wide subscription that wakes this store's waiters.
        self.notifier = RedisNotifier(client, self.channel)

    def close(self) -> None:
        """Stop the notifier thread (it restarts on demand); give kept connections back."""
        self.notifier.close()
        self._drop_idle(disconnect=False)

    def _drop_idle(self, *, disconnect: bool) -> None:
        """Give the connections the fast path keeps back to the pool."""
        while self._idle:
            try:
                conn = self._idle.pop()
            except IndexError:  # another thread took the last one
                return
            if disconnect:
                conn.disconnect()
            self._pool.release(conn)

    def aio(self) -> AsyncRedisStore:
        """The asyncio store of the running event loop (created on first use)."""
        from .aio import AsyncRedisStore
        from .connection import async_client_from

        loop = asyncio.get_running_loop()
        self._own_process()
        store = self._aio.get(loop)
        if store is None:
            factory = self._async_client or (lambda: async_client_from(self.client))
            store = self._aio[loop] = AsyncRedisStore(factory(), self)
        return store

    def scanner(self) -> Any:
        """What ``idempotency_inspect`` and the admin scan and purge with."""
        from .scan import RedisScanner

        return RedisScanner(self)

    def slot(self, rid: bytes) -> Slot:
        """The slot of record ``rid``."""
        return Slot(rid, key_name(self.prefix, rid))

    # -- sending --------------------------------------------------------------------------

    def _guarded(self, func: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``func(...)``, once more after a demoted primary refused it; errors made neutral."""
        for retry in (False, True):
            try:
                return func(*args, **kwargs)
            except redis.exceptions.RedisError as exc:
                if retry or not demoted(exc):
                    raise translate(exc) from exc
            # Idle connections may still point at the demoted primary; reconnecting
            # through the Sentinel finds the new one.
            if self._pool is not None:
                self._drop_idle(disconnect=True)
                self._pool.disconnect(inuse_connections=False)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> tuple[Any, bool]:
        """A connection for the fast path, and whether it is one we kept."""
        if self._idle and self._own_process():
            try:
                return self._idle.pop(), True
            except IndexError:  # another thread took the last one
                pass
        return self._pool.get_connection(*CHECKOUT_ARGS), False

    def _own_process(self) -> bool:
        """False, after forgetting them, when the kept connections are a parent's.

        Checked on use rather than by an at-fork hook, which a server that forks from C
        (uWSGI by default) never runs. The pools reset themselves (redis-py checks too).
        """
        if self._pid == os.getpid():
            return True
        self._idle = []
        self._aio = weakref.WeakKeyDictionary()
        self._pid = os.getpid()
        return False

    def _send(self, packed: Sequence[bytes]) -> list[Any]:
        """Write already-encoded commands at once and read one reply each (errors raised)."""
        conn, kept = self._connection()
        try:
            return self._exchange(conn, packed)
        except redis.exceptions.ConnectionError as exc:
            if not kept or demoted(exc):
                raise
        # A kept connection the server closed while it sat idle (a restart, its idle
        # timeout): what the pool's own check does on checkout, done after the fact.
        # The other kept ones are likely closed too. Every script call may be sent again
        # (see the module docstring).
        self._drop_idle(disconnect=True)
        return self._exchange(self._pool.get_connection(*CHECKOUT_ARGS), packed)

    def _exchange(self, conn: Any, packed: Sequence[bytes]) -> list[Any]:
        try:
            replies: list[Any] = conn.retry.call_with_retry(
                lambda: send_all(conn, packed, raise_error=True),
                lambda _error: conn.disconnect(),
            )
            return replies
        except BaseException as exc:
            if not isinstance(exc, redis.exceptions.ResponseError):
                # Replies may be left unread on the socket: never reuse it as it is.
                conn.disconnect()
            raise
        finally:
            if len(self._idle) < self._keep:
                self._idle.append(conn)
            else:
                self._pool.release(conn)

    def _eval(self, script: Script, name: str, args: Sequence[bytes]) -> Any:
        key = name.encode()
        for attempt in (1, 2):
            try:
                if self._pool is not None:
                    return self._send([script.pack(key, args)])[0]
                return self.client.execute_command(
                    "EVALSHA", script.sha, 1, key, *args, **{NEVER_DECODE: True}
                )
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                # First call on this server (or after a restart or SCRIPT FLUSH).
                self.client.script_load(script.source)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the four steps -------------------------------------------------------------------

    def claim(self, slot: Slot, running: bytes, lease_ms: int) -> ClaimReply:
        """Create ``running`` with a lease, or return what is there (one round trip)."""
        reply = self._guarded(self._eval, CLAIM, slot.name, (running, millis(lease_ms)))
        return claim_reply(reply, running)

    def read(self, slot: Slot) -> bytes | None:
        """The record in ``slot`` (a plain ``GET``: one round trip, nothing written)."""
        key = slot.name.encode()

        def get() -> Any:
            if self._pool is not None:
                return self._send([get_command(key)])[0]
            return self.client.execute_command("GET", key, **{NEVER_DECODE: True})

        reply = self._guarded(get)
        return None if reply is None else raw(reply)

    def complete(self, slot: Slot, token: bytes, record: bytes, ttl_ms: int) -> bool:
        """Store ``record`` if ``token`` still owns the slot; publish if someone waits."""
        args = (token, record, millis(ttl_ms), self._channel)
        return bool(self._guarded(self._eval, COMPLETE, slot.name, args))

    def release(self, slot: Slot, token: bytes) -> bool:
        """Delete the running record if ``token`` owns it; publish if someone waits."""
        return bool(self._guarded(self._eval, RELEASE, slot.name, (token, self._channel)))

    def renew(self, leases: Sequence[tuple[Slot, bytes, int]]) -> list[bool]:
        """Extend many leases in one round trip (one per lease on Cluster)."""
        if self._pool is None or len(leases) == 1:
            return [
                bool(self._guarded(self._eval, RENEW, s.name, (t, millis(ms))))
                for s, t, ms in leases
            ]

        def pipelined() -> list[bool]:
            packed = [RENEW.pack(s.name.encode(), (t, millis(ms))) for s, t, ms in leases]
            try:
                return [bool(r) for r in self._send(packed)]
            except redis.exceptions.NoScriptError:
                self.client.script_load(RENEW.source)
                return [bool(r) for r in self._send(packed)]

        # Renewing is idempotent, so the whole batch may be sent again.
        return self._guarded(pipelined)
