"""The asyncio Redis store: the same scripts over ``redis.asyncio``, no thread per request.

One :class:`AsyncRedisStore` exists per event loop (a ``redis.asyncio`` connection
belongs to the loop that opened it). Its client is derived from the blocking one (see
:mod:`.connection`) and its pool blocks rather than fails when every connection is busy,
so thousands of coroutines queue for a handful of connections. Waiting for a concurrent
owner goes through the blocking store's :class:`~.notifier.RedisNotifier`, whose thread
resolves each waiter's future on its own loop.

Checking a connection out of a ``redis.asyncio`` pool and back in costs more than the
script call itself (a condition, a lock, a timeout, a check of the socket and metrics
calls each way), so, as the blocking store does, calls keep the connections they used,
up to :data:`_KEEP_IDLE` per loop, and go to the pool only when none is free. Only a
connection whose reply was read is kept: a call cancelled or failed between its write
and its read drops its connection, so no kept connection holds a stale reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import redis
from redis.client import NEVER_DECODE

from ..base import ClaimReply, Slot
from .connection import CHECKOUT_ARGS, is_cluster
from .scripts import CLAIM, COMPLETE, RELEASE, Script
from .store import (
    RedisStore,
    claim_reply,
    demoted,
    get_command,
    kept_at_most,
    millis,
    raw,
    translate,
)

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Connections a loop's store keeps checked out of its pool between calls, at most (see
#: :func:`.store.kept_at_most`): one per request a busy worker has at Redis at once.
_KEEP_IDLE = 8


class AsyncRedisStore:
    """Record operations for coroutines, on one event loop."""

    def __init__(self, client: Any, sync_store: RedisStore) -> None:
        self.client = client
        self._sync = sync_store
        self._channel = sync_store.channel.encode()
        self._pool: Any = None if is_cluster(client) else client.connection_pool
        self._keep = kept_at_most(self._pool, _KEEP_IDLE)
        self._idle: list[Any] = []

    def slot(self, rid: bytes) -> Slot:
        """The slot of record ``rid`` (the same as the blocking store's)."""
        return self._sync.slot(rid)

    async def _drop_idle(self) -> None:
        """Close the kept connections and give them back to the pool."""
        while self._idle:
            conn = self._idle.pop()
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)

    async def _guarded(
        self, func: Callable[_P, Awaitable[_R]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        for retry in (False, True):
            try:
                return await func(*args, **kwargs)
            except redis.exceptions.RedisError as exc:
                if retry or not demoted(exc):
                    raise translate(exc) from exc
            # Kept and idle connections may still point at the demoted primary;
            # reconnecting through the Sentinel finds the new one.
            if self._pool is not None:
                await self._drop_idle()
                await self._pool.disconnect(inuse_connections=False)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, packed: bytes) -> Any:
        """Write one encoded command and read its reply, on a kept connection if one is free."""
        if self._idle:
            try:
                return await self._exchange(self._idle.pop(), packed)
            except redis.exceptions.ConnectionError as exc:
                if demoted(exc):
                    raise
            # A kept connection the server closed while it sat idle: as the blocking
            # store's _send does, drop them all and send again on a pooled one.
            await self._drop_idle()
        return await self._exchange(await self._pool.get_connection(*CHECKOUT_ARGS), packed)

    async def _exchange(self, conn: Any, packed: bytes) -> Any:
        async def exchange() -> Any:
            await conn.send_packed_command(packed)
            return await conn.read_response(disable_decoding=True)

        async def failed(_error: Exception) -> None:
            await conn.disconnect()

        try:
            reply = await conn.retry.call_with_retry(exchange, failed)
        except redis.exceptions.ResponseError:
            await self._done(conn)  # an error reply: read, so the connection is in step
            raise
        except BaseException:
            # Cancelled or failed between the write and the read, its reply may still
            # come: closed, the connection reconnects when the pool hands it out again.
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)
            raise
        await self._done(conn)
        return reply

    async def _done(self, conn: Any) -> None:
        if len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            await self._pool.release(conn)

    async def _eval(self, script: Script, name: str, args: Sequence[bytes]) -> Any:
        key = name.encode()
        for attempt in (1, 2):
            try:
                if self._pool is not None:
                    return await self._send(script.pack(key, args))
                return await self.client.execute_command(
                    "EVALSHA", script.sha, 1, key, *args, **{NEVER_DECODE: True}
                )
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                await self.client.script_load(script.source)
        raise AssertionError("unreachable")  # pragma: no cover

    async def claim(self, slot: Slot, running: bytes, lease_ms: int) -> ClaimReply:
        """See :meth:`RedisStore.claim`."""
        reply = await self._guarded(self._eval, CLAIM, slot.name, (running, millis(lease_ms)))
        return claim_reply(reply, running)

    async def read(self, slot: Slot) -> bytes | None:
        """See :meth:`RedisStore.read`."""
        key = slot.name.encode()

        async def get() -> Any:
            if self._pool is not None:
                return await self._send(get_command(key))
            return await self.client.execute_command("GET", key, **{NEVER_DECODE: True})

        reply = await self._guarded(get)
        return None if reply is None else raw(reply)

    async def complete(self, slot: Slot, token: bytes, record: bytes, ttl_ms: int) -> bool:
        """See :meth:`RedisStore.complete`."""
        args = (token, record, millis(ttl_ms), self._channel)
        return bool(await self._guarded(self._eval, COMPLETE, slot.name, args))

    async def release(self, slot: Slot, token: bytes) -> bool:
        """See :meth:`RedisStore.release`."""
        return bool(await self._guarded(self._eval, RELEASE, slot.name, (token, self._channel)))
