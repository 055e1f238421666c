"""The stores' connections (blocking and asyncio): the ones kept between calls, and the pool's."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_idempotency.stores.base import ClaimReply
from django_idempotency.stores.redis.connection import CHECKOUT_ARGS
from django_idempotency.stores.redis.store import RedisStore

from .support.redis_server import RedisServer


def running(token: bytes) -> bytes:
    """A running record as the scripts read it: state at byte 0, the token at 4-15."""
    assert len(token) == 12
    return b"R-\0\0" + token + b"meta"


def claim_fresh(store: RedisStore) -> ClaimReply:
    slot = store.slot(uuid.uuid4().bytes[:12])
    return store.claim(slot, running(uuid.uuid4().bytes[:12]), 30_000)


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of this test's own, so it may be restarted."""
    with RedisServer() as server:
        yield server


def test_a_kept_connection_closed_by_a_restart_is_replaced_without_client_retries(own_server):
    # No retries in the client's policy: only the store's own check can save the call.
    client = redis.Redis.from_url(own_server.url, retry=Retry(NoBackoff(), 0))
    store = RedisStore(client, "conn")
    assert claim_fresh(store) == ClaimReply(None)
    own_server.restart()
    # The connection kept from before the restart is closed; the pool's checkout would
    # have noticed, so the store must too: the call succeeds and lands on the new server.
    assert claim_fresh(store) == ClaimReply(None)
    assert len(client.keys("conn:*")) == 1
    store.close()
    client.close()


def test_a_forked_child_never_uses_the_parents_kept_connection(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, "fork")
    assert claim_fresh(store) == ClaimReply(None)  # keeps the connection it used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        status = 1
        try:
            _conn, kept = store._connection()
            replies = [claim_fresh(store) for _ in range(200)]
            ok = not kept and all(r == ClaimReply(None) for r in replies)
            os.write(write, b"ok" if ok else f"kept={kept}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    # Meanwhile the parent keeps using its connection: on a shared socket the two
    # processes would read each other's replies.
    replies = [claim_fresh(store) for _ in range(200)]
    _, status = os.waitpid(pid, 0)
    said = os.read(read, 100)
    os.close(read)
    assert (status, said) == (0, b"ok")
    assert all(r == ClaimReply(None) for r in replies)
    assert len(client.keys("fork:*")) == 401
    store.close()
    client.close()


def test_a_small_pool_is_left_whole_for_the_application(redis_url):
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=2, timeout=0.5)
    client = redis.Redis(connection_pool=pool)
    store = RedisStore(client, "small")
    for _ in range(5):
        assert claim_fresh(store) == ClaimReply(None)
    # Both of the pool's connections are free for the application at once.
    held: list[object] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def hold() -> None:
        try:
            conn = pool.get_connection()
            held.append(conn)
            barrier.wait(timeout=5)
            pool.release(conn)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(held) == 2
    store.close()
    client.close()


def test_a_burst_wider_than_the_kept_connections_shares_the_pool(redis_url):
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=16, timeout=5)
    client = redis.Redis(connection_pool=pool)
    store = RedisStore(client, "burst")
    replies: list[ClaimReply] = []
    lock = threading.Lock()

    def claims() -> None:
        got = [claim_fresh(store) for _ in range(50)]
        with lock:
            replies.extend(got)

    threads = [threading.Thread(target=claims) for _ in range(40)]  # past the pool's 16
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 2000 and all(r == ClaimReply(None) for r in replies)
    assert len(client.keys("burst:*")) == 2000
    store.close()
    # Every connection is back in the pool after close(): all 16 can be checked out.
    conns = [pool.get_connection() for _ in range(16)]
    for conn in conns:
        pool.release(conn)
    client.close()


# -- the asyncio store --------------------------------------------------------------------


def async_store(url: str, prefix: str, **pool: Any) -> RedisStore:
    """A store whose asyncio client has a pool of ``pool`` options and no client retries."""

    def client() -> redis.asyncio.Redis:
        return redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                url, retry=AsyncRetry(NoBackoff(), 0), **pool
            )
        )

    return RedisStore(redis.Redis.from_url(url), prefix, async_client=client)


async def aclaim_fresh(store: RedisStore) -> ClaimReply:
    slot = store.slot(uuid.uuid4().bytes[:12])
    return await store.aio().claim(slot, running(uuid.uuid4().bytes[:12]), 30_000)


async def until(check: Callable[[], Any], what: str) -> None:
    """Let the loop run until ``check()`` holds (for at most a minute)."""
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)


def test_an_async_kept_connection_closed_by_a_restart_is_replaced(own_server):
    store = async_store(own_server.url, "aconn", max_connections=50)

    async def scenario() -> None:
        assert await aclaim_fresh(store) == ClaimReply(None)
        own_server.restart()
        # The kept connection is closed: the call still succeeds, on the new server.
        assert await aclaim_fresh(store) == ClaimReply(None)

    asyncio.run(scenario())
    assert len(store.client.keys("aconn:*")) == 1
    store.close()


def test_a_call_cancelled_before_its_reply_leaves_no_reply_for_the_next(redis_url):
    """A task cancelled after its command went out must not leave that reply to be read
    by the next call on the same connection (which would then return another's reply)."""
    store = async_store(redis_url, "cancel", max_connections=50)
    admin = redis.Redis.from_url(redis_url)
    known = store.slot(uuid.uuid4().bytes[:12])
    admin.set(known.name, b"the known record")

    async def scenario() -> None:
        aio = store.aio()
        assert await aclaim_fresh(store) == ClaimReply(None)  # a connection is kept
        admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")  # scripts wait
        try:
            task = asyncio.ensure_future(aclaim_fresh(store))
            # Postponed by the pause: the claim was written and its reply is pending.
            await until(lambda: admin.info("clients")["blocked_clients"] >= 1, "the claim")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        # Each call gets its own reply, on whichever connection it is sent.
        for _ in range(5):
            assert await aio.read(known) == b"the known record"
            assert await aclaim_fresh(store) == ClaimReply(None)

    asyncio.run(scenario())
    store.close()
    admin.close()


def test_async_claims_wider_than_the_pool_all_succeed(redis_url):
    store = async_store(redis_url, "aburst", max_connections=16, timeout=30)

    async def scenario() -> list[ClaimReply]:
        async def claims() -> list[ClaimReply]:
            return [await aclaim_fresh(store) for _ in range(20)]

        batches = await asyncio.gather(*(claims() for _ in range(100)))  # past the pool's 16
        return [reply for batch in batches for reply in batch]

    replies = asyncio.run(scenario())
    assert len(replies) == 2000 and all(r == ClaimReply(None) for r in replies)
    assert len(store.client.keys("aburst:*")) == 2000
    store.close()


def test_a_small_async_pool_is_left_whole_for_the_application(redis_url):
    store = async_store(redis_url, "asmall", max_connections=2, timeout=0.5)

    async def scenario() -> None:
        for _ in range(5):
            assert await aclaim_fresh(store) == ClaimReply(None)
        # Both of the pool's connections are free for the application at once.
        pool = store.aio().client.connection_pool
        held = [await pool.get_connection(*CHECKOUT_ARGS) for _ in range(2)]
        for conn in held:
            await pool.release(conn)

    asyncio.run(scenario())
    store.close()
