"""The asyncio Redis store: the same scripts over ``redis.asyncio``, no thread per request.

One :class:`AsyncRedisStore` exists per event loop (a ``redis.asyncio`` connection
belongs to the loop that opened it). Its client is derived from the blocking one (see
:mod:`.connection`) and its pool blocks rather than fails when every connection is busy,
so thousands of coroutines queue for a handful of connections. Waiting for a concurrent
owner goes through the blocking store's :class:`~.notifier.RedisNotifier`, whose thread
resolves each waiter's future on its own loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.client import NEVER_DECODE

from ...records import TOKEN_SLICE
from ..base import ClaimReply, Slot
from .connection import CHECKOUT_ARGS, is_cluster
from .scripts import CLAIM, COMPLETE, RELEASE, Script
from .store import RedisStore, _ms, _raw, claim_reply, demoted, get_command, translate

_R = TypeVar("_R")


class AsyncRedisStore:
    """Record operations for coroutines, on one event loop."""

    def __init__(self, client: Any, sync_store: RedisStore) -> None:
        self.client = client
        self._sync = sync_store
        self._channel = sync_store.channel.encode()
        self._pool: Any = None if is_cluster(client) else client.connection_pool

    def slot(self, rid: bytes) -> Slot:
        """The slot of record ``rid`` (the same as the blocking store's)."""
        return self._sync.slot(rid)

    async def _guarded(self, func: Callable[[], Awaitable[_R]]) -> _R:
        for retry in (False, True):
            try:
                return await func()
            except redis.exceptions.RedisError as exc:
                if retry or not demoted(exc):
                    raise translate(exc) from exc
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect(inuse_connections=False)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, packed: bytes) -> Any:
        pool = self._pool
        conn = await pool.get_connection(*CHECKOUT_ARGS)

        async def exchange() -> Any:
            await conn.send_packed_command(packed)
            return await conn.read_response(disable_decoding=True)

        async def failed(_error: Exception) -> None:
            await conn.disconnect()

        try:
            return await conn.retry.call_with_retry(exchange, failed)
        except BaseException as exc:
            if not isinstance(exc, redis.exceptions.ResponseError):
                await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

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
        reply = claim_reply(
            await self._guarded(lambda: self._eval(CLAIM, slot.name, (running, _ms(lease_ms))))
        )
        if reply.record is not None and reply.record[TOKEN_SLICE] == running[TOKEN_SLICE]:
            return ClaimReply(None)
        return reply

    async def read(self, slot: Slot) -> bytes | None:
        """See :meth:`RedisStore.read`."""
        key = slot.name.encode()

        async def get() -> Any:
            if self._pool is not None:
                return await self._send(get_command(key))
            return await self.client.execute_command("GET", key, **{NEVER_DECODE: True})

        reply = await self._guarded(get)
        return None if reply is None else _raw(reply)

    async def complete(self, slot: Slot, token: bytes, record: bytes, ttl_ms: int) -> bool:
        """See :meth:`RedisStore.complete`."""
        args = (token, record, _ms(ttl_ms), self._channel)
        return bool(await self._guarded(lambda: self._eval(COMPLETE, slot.name, args)))

    async def release(self, slot: Slot, token: bytes) -> bool:
        """See :meth:`RedisStore.release`."""
        args = (token, self._channel)
        return bool(await self._guarded(lambda: self._eval(RELEASE, slot.name, args)))
