"""Redis Sentinel: connecting through it, and a failover during a stream of requests.

One primary, one replica and one Sentinel (``SentinelHarness``) for the module.
The app connects the two documented ways: a factory returning
``Sentinel(...).master_for(...)``, and a django-redis cache using its
``SentinelClient``.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from django.test import Client
from django_redis import get_redis_connection
from redis.sentinel import Sentinel, SentinelConnectionPool

from django_idempotency import run
from django_idempotency.conf import get_settings
from django_idempotency.engine import Engine
from django_idempotency.events import Door
from django_idempotency.flights import Flights
from django_idempotency.flows.run import RunFlow
from django_idempotency.options import NONE
from django_idempotency.runtime import get_engine, sealer_for
from django_idempotency.stores.redis import RedisStore

from .support import views
from .support.topologies import SentinelHarness

pytestmark = pytest.mark.slow

SERVICE = "mymaster"
#: The Sentinel's address, set by the ``sentinel`` fixture.
SENTINELS: list[tuple[str, int]] = []


def master_client() -> redis.Redis:
    """The ``IDEMPOTENCY["REDIS"]`` factory: a client that follows the current primary."""
    sentinel = Sentinel(SENTINELS, socket_timeout=2, socket_connect_timeout=2)
    return sentinel.master_for(SERVICE, socket_timeout=5, socket_connect_timeout=2)


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelHarness]:
    with SentinelHarness(SERVICE) as harness:
        SENTINELS[:] = [harness.sentinel_addr]
        yield harness


@pytest.fixture
def redis_client(sentinel: SentinelHarness) -> redis.Redis:
    """A client on the current primary, emptied (overrides conftest's single server)."""
    client = sentinel.master_for()
    client.flushall()
    return client


@pytest.fixture(autouse=True)
def idempotency_settings(settings: Any, redis_client: redis.Redis) -> Any:
    """Point the app at the Sentinel (overrides conftest's fixture of the same name)."""
    settings.IDEMPOTENCY = {
        "REDIS": "tests.test_sentinel.master_client",
        "LOCK_TTL": 5,
        "WAIT_TIMEOUT": 5,
    }
    views.calls.clear()
    return settings


def post(client: Client, key: str, body: str) -> Any:
    return client.post(
        "/middleware/", data=body, content_type="text/plain", headers={"Idempotency-Key": key}
    )


def test_run_and_http_replays_through_sentinel_master_for():
    store: Any = get_engine().store
    assert isinstance(store.client.connection_pool, SentinelConnectionPool)
    assert run("through-sentinel", lambda: {"v": 1}) == {"v": 1}
    assert run("through-sentinel", lambda: {"v": 2}) == {"v": 1}
    first = post(Client(), "k", "x")
    second = post(Client(), "k", "x")
    assert second.content == first.content
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls["middleware"] == 1


def test_django_redis_sentinel_client_alias(settings, sentinel):
    settings.CACHES = {
        **settings.CACHES,
        "sentinel": {
            "BACKEND": "django_redis.cache.RedisCache",
            # The host part is the Sentinel service name, not a server address.
            "LOCATION": f"redis://{SERVICE}/0",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": [sentinel.sentinel_addr],
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 5,
            },
        },
    }
    settings.IDEMPOTENCY = {"REDIS": "sentinel", "LOCK_TTL": 5, "WAIT_TIMEOUT": 5}
    assert isinstance(get_redis_connection("sentinel").connection_pool, SentinelConnectionPool)
    first = post(Client(), "dj", "x")
    second = post(Client(), "dj", "x")
    assert second.content == first.content
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls["middleware"] == 1
    # It really went to the primary the Sentinel names.
    assert sentinel.current_primary().client().dbsize() > 0


def test_a_waiter_through_a_failover_gets_the_owners_result_instead_of_failing(sentinel):
    # A duplicate waits (its notifier subscribed to the old primary) while the primary is
    # demoted; the owner completes on the new one. The waiter must replay the result,
    # not answer 503 and not run the action.
    ran: list[str] = []
    claimed = threading.Event()
    finish = threading.Event()

    def owner_action() -> str:
        ran.append("owner")
        claimed.set()
        finish.wait(30)
        return "owner's"

    owner_result: list[Any] = []
    owner = threading.Thread(target=lambda: owner_result.append(run("failover", owner_action)))
    owner.start()
    assert claimed.wait(10)
    # Another process's caller: its own engine and notifier, no local coalescing.
    other = Engine(
        RedisStore(master_client(), "idem"), sealer_for(get_settings()), flights=Flights()
    )
    flow = RunFlow(Door.RUN, engine=other)
    waited: list[Any] = []
    options = NONE.run()

    def waiter_action() -> str:
        ran.append("waiter")
        return "waiter's"

    waiter = threading.Thread(
        target=lambda: waited.append(flow.run("failover", waiter_action, options))
    )
    waiter.start()
    time.sleep(0.3)  # let it wait
    sentinel.failover()
    finish.set()
    owner.join(30)
    waiter.join(30)
    other.close()
    assert ran == ["owner"]
    assert owner_result == ["owner's"]
    assert waited == ["owner's"]


def test_an_async_call_after_a_failover_lands_on_the_new_primary(sentinel):
    # The asyncio store keeps the connection it used; after the failover that connection
    # still points at the demoted primary, which refuses the claim's write. The store
    # must drop it and send again through the Sentinel, not answer 503.
    store = RedisStore(master_client(), "afailover")

    async def claim() -> bool:
        slot = store.slot(uuid.uuid4().bytes[:12])
        running = b"R-\0\0" + uuid.uuid4().bytes[:12] + b"meta"
        return (await store.aio().claim(slot, running, 30_000)).claimed

    async def scenario() -> list[bool]:
        before = await asyncio.gather(*(claim() for _ in range(8)))  # several kept
        sentinel.failover()
        return before + [await claim() for _ in range(3)]

    assert asyncio.run(scenario()) == [True] * 11
    assert len(sentinel.master_for().keys("afailover:*")) == 11
    store.close()


@dataclass
class Sent:
    key: str
    sent: float
    received: float
    status: int
    body: bytes
    replayed: bool


def test_failover_during_a_stream_never_reruns_a_stored_action(sentinel):
    """Requests keep flowing through ``SENTINEL FAILOVER``.

    * A key whose result was stored (and replicated) before the failover began is
      never run again: every later retry replays it. So is a key first sent after it.
    * Once the failover is over, no request is refused: connections still open to
      the demoted primary get READONLY, and the store reconnects and sends again.
    * The window: replication is asynchronous and the old primary keeps accepting
      writes until it is demoted, so a record written during the switch can be lost
      with it, and that key may run once more. The test counts those, and allows them.
    """
    log: list[Sent] = []
    log_lock = threading.Lock()
    stop = threading.Event()

    def stream(worker: int) -> None:
        client = Client()
        mine: list[str] = []
        rng = random.Random(worker)
        while not stop.is_set():
            if mine and rng.random() < 0.3:
                key = rng.choice(mine)
            else:
                key = f"{worker}-{uuid.uuid4().hex[:8]}"
                mine.append(key)
            sent = time.monotonic()
            response = post(client, key, key)
            entry = Sent(
                key,
                sent,
                time.monotonic(),
                response.status_code,
                response.content,
                response.get("Idempotent-Replayed") == "true",
            )
            with log_lock:
                log.append(entry)

    workers = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.7)
        # Everything finished before `began` is on the replica once WAIT returns.
        old_primary = sentinel.current_primary().client()
        began = time.monotonic()
        old_primary.set("marker", "1")
        assert old_primary.execute_command("WAIT", 1, 5000) == 1
        sentinel.failover()
        over = time.monotonic()
        time.sleep(0.7)
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    # Retry every key once more, after the failover.
    client = Client()
    keys = {entry.key for entry in log}
    for key in sorted(keys):
        sent = time.monotonic()
        response = post(client, key, key)
        log.append(
            Sent(
                key,
                sent,
                time.monotonic(),
                response.status_code,
                response.content,
                response.get("Idempotent-Replayed") == "true",
            )
        )

    by_key: dict[str, list[Sent]] = defaultdict(list)
    for entry in log:
        by_key[entry.key].append(entry)
    statuses = {entry.status for entry in log}
    assert statuses <= {201, 503}, statuses
    refused_after = [e for e in log if e.sent >= over and e.status != 201]
    assert refused_after == [], refused_after[:3]

    stored_before = {
        k for k, es in by_key.items() if any(e.status == 201 and e.received < began for e in es)
    }
    only_after = {k for k, es in by_key.items() if all(e.sent >= over for e in es)}
    in_window: set[str] = set()
    executions = 0
    for key, entries in by_key.items():
        runs = {json.loads(e.body)["n"] for e in entries if e.status == 201}
        executions += len(runs)
        if key in stored_before or key in only_after:
            assert len(runs) == 1, (key, entries)
        elif len(runs) > 1:
            in_window.add(key)
    assert executions == views.calls["middleware"]
    assert len(stored_before) > 20 and len(only_after) > 20
    print(
        f"\n{len(log)} requests over {len(by_key)} keys; {len(stored_before)} stored before "
        f"the failover, {len(only_after)} after; {sum(e.status == 503 for e in log)} refused "
        f"with 503 during it; {len(in_window)} key(s) written during it ran twice"
    )
