"""The blocking store's connections: the ones it keeps between calls, and the pool's."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_idempotency.stores.base import ClaimReply
from django_idempotency.stores.redis.store import RedisStore
from django_idempotency.testing import RedisServer


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
