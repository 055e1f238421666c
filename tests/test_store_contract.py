"""One contract for every store: the same tests against Redis and the in-memory store.

A store is one atomic step per operation; leases and TTLs expire; only the token that
owns a running record may complete, release or renew it; a claim that finds a running
record flags it, so its completion wakes the waiters. The engine's rules (coalescing,
waiting, replay) must then hold on either store, for threads and for coroutines.

The in-memory variants need no server: ``make check`` runs them (``-m "no_redis"``).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from django_idempotency.conf import build, get_settings
from django_idempotency.engine import Engine
from django_idempotency.events import Door
from django_idempotency.exceptions import RecordTampered
from django_idempotency.flights import Flights
from django_idempotency.flows.run import RunFlow
from django_idempotency.inventory import Inventory
from django_idempotency.records import TOKEN_SLICE, WAITER_FLAG_OFFSET, Kind, Record, State
from django_idempotency.runtime import build_engine, sealer_for
from django_idempotency.steps import drive
from django_idempotency.stores.base import ClaimReply, Slot, Store
from django_idempotency.stores.memory import MemoryStore
from django_idempotency.stores.redis import RedisStore

from .support.servers import eventually

STORES = [
    pytest.param("memory", marks=pytest.mark.no_redis, id="memory"),
    pytest.param("redis", id="redis"),
]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore("contract")
        return
    client = request.getfixturevalue("redis_client")
    redis_store = RedisStore(client, "contract")
    yield redis_store
    redis_store.close()


@pytest.fixture
def engine(store: Store) -> Iterator[Engine]:
    engine = Engine(store, sealer_for(get_settings()), flights=Flights())
    yield engine
    engine.close()


def _slot(store: Store) -> Slot:
    return store.slot(uuid.uuid4().bytes[:12])


def _running(engine: Engine, slot: Slot, token: bytes) -> bytes:
    return engine.sealer.running(slot.rid, Kind.RUN, b"s", b"k", token, b"fp", 1, Door.RUN)


def _final(engine: Engine, slot: Slot, payload: bytes = b"1") -> bytes:
    record = Record(State.DONE, Kind.RUN, b"s", b"k", b"fp", 1, 2, None, payload, door=Door.RUN)
    return engine.sealer.seal(slot.rid, record)


OWNER, OTHER = b"owner-token!", b"other-token!"


def test_a_claim_creates_a_running_record_once(engine, store):
    slot = _slot(store)
    assert store.claim(slot, _running(engine, slot, OWNER), 5000).claimed
    reply = store.claim(slot, _running(engine, slot, OTHER), 5000)
    assert not reply.claimed and reply.record is not None
    assert reply.record[TOKEN_SLICE] == OWNER
    assert 0 < reply.lease_left_ms <= 5000
    # That claim flagged the record in the store: a completion now wakes its waiters.
    again = store.claim(slot, _running(engine, slot, OTHER), 5000).record
    assert again is not None and again[WAITER_FLAG_OFFSET : WAITER_FLAG_OFFSET + 1] == b"w"


def test_only_the_owner_completes_and_the_final_record_is_then_found(engine, store):
    slot = _slot(store)
    store.claim(slot, _running(engine, slot, OWNER), 5000)
    final = _final(engine, slot)
    assert not store.complete(slot, OTHER, final, 60_000)
    assert store.complete(slot, OWNER, final, 60_000)
    assert store.complete(slot, OWNER, final, 60_000)  # a retried completion
    assert store.claim(slot, _running(engine, slot, OTHER), 5000) == ClaimReply(final)
    assert not store.release(slot, OWNER)  # final records are not released


def test_a_read_finds_what_is_there_and_changes_nothing(engine, store):
    slot = _slot(store)
    assert store.read(slot) is None
    assert store.claim(slot, _running(engine, slot, OWNER), 5000).claimed
    running = store.read(slot)
    assert running is not None and running[TOKEN_SLICE] == OWNER
    # Unlike a claim, a read flags no waiter: the owner's completion publishes nothing.
    assert running[WAITER_FLAG_OFFSET : WAITER_FLAG_OFFSET + 1] == b"-"
    assert store.read(slot) == running
    final = _final(engine, slot)
    assert store.complete(slot, OWNER, final, 60_000)

    async def read_async() -> bytes | None:
        return await store.aio().read(slot)

    assert store.read(slot) == asyncio.run(read_async()) == final


def test_looking_verifies_a_record_without_claiming_it(engine, store):
    key = str(uuid.uuid4())
    slot = engine.slot(Kind.RUN, "s", key)

    def look() -> Record | None:
        return drive(engine.context, engine.looking(Kind.RUN, Door.RUN, "s", key))

    assert look() is None
    assert store.read(slot) is None  # nothing was claimed
    running = engine.sealer.running(slot.rid, Kind.RUN, b"s", key.encode(), OWNER, b"fp", 1)
    store.claim(slot, running, 5000)
    final = Record(State.DONE, Kind.RUN, b"s", key.encode(), b"fp", 1, 2, None, b"v")
    store.complete(slot, OWNER, engine.sealer.seal(slot.rid, final), 60_000)
    found = look()
    assert found is not None and found.payload == b"v"
    # A record sealed for another id (copied, planted) is refused, as a claim refuses it.
    other = str(uuid.uuid4())
    copied = engine.slot(Kind.RUN, "s", other)
    store.claim(copied, running, 5000)
    with pytest.raises(RecordTampered):
        drive(engine.context, engine.looking(Kind.RUN, Door.RUN, "s", other))


def test_only_the_owner_releases_and_the_next_claim_then_runs(engine, store):
    slot = _slot(store)
    store.claim(slot, _running(engine, slot, OWNER), 5000)
    assert not store.release(slot, OTHER)
    assert store.release(slot, OWNER)
    assert store.claim(slot, _running(engine, slot, OTHER), 5000).claimed


def test_renewal_keeps_an_owned_lease_alive_and_a_lapsed_one_lost(engine, store):
    slot, lapsed = _slot(store), _slot(store)
    store.claim(slot, _running(engine, slot, OWNER), 300)
    store.claim(lapsed, _running(engine, lapsed, OWNER), 300)
    assert store.renew([(slot, OWNER, 60_000), (lapsed, OTHER, 60_000)]) == [True, False]
    # The lapsed one expires at its lease's end; the renewed one is still running.
    eventually(lambda: store.claim(lapsed, _running(engine, lapsed, OTHER), 300).claimed, 10)
    reply = store.claim(slot, _running(engine, slot, OTHER), 300)
    assert not reply.claimed and reply.lease_left_ms > 1000


def test_a_final_record_expires_after_its_ttl(engine, store):
    slot = _slot(store)
    store.claim(slot, _running(engine, slot, OWNER), 5000)
    store.complete(slot, OWNER, _final(engine, slot), 200)
    eventually(lambda: store.claim(slot, _running(engine, slot, OTHER), 5000).claimed, 10)


def _owned_and_listening(engine: Engine, store: Store) -> tuple[Slot, Any]:
    """A slot its owner holds, and the store's notifier once its subscription is live."""
    slot = _slot(store)
    store.claim(slot, _running(engine, slot, OWNER), 60_000)
    notifier = store.notifier
    notifier.start()
    eventually(lambda: notifier.position()[0], 10, "a live subscription")
    return slot, notifier


def test_a_waiting_thread_is_woken_by_the_completion(engine, store):
    slot, notifier = _owned_and_listening(engine, store)
    woken: list[bool] = []
    position = notifier.position()
    assert not store.claim(slot, _running(engine, slot, OTHER), 60_000).claimed
    waiter = threading.Thread(target=lambda: woken.append(notifier.wait(slot, position, 30)))
    started = time.monotonic()
    waiter.start()
    store.complete(slot, OWNER, _final(engine, slot), 60_000)
    waiter.join(30)
    # Woken (or told the owner finished after its claim) long before its 30 s timeout.
    assert woken == [True] and time.monotonic() - started < 15


def test_a_waiter_registering_after_the_completion_is_told_at_once(engine, store):
    slot, notifier = _owned_and_listening(engine, store)
    position = notifier.position()
    assert not store.claim(slot, _running(engine, slot, OTHER), 60_000).claimed
    store.complete(slot, OWNER, _final(engine, slot), 60_000)
    # The completion reaches this process before the duplicate waits: the Redis
    # notifier hears it on its own thread, the in-memory one as it happens.
    heard = notifier._recent if isinstance(store, RedisStore) else notifier._heard
    eventually(lambda: slot.name in heard, 10, "the completion heard")
    # Told the owner finished, not left to wait out a notification already received.
    assert notifier.wait(slot, position, 3600) is True

    async def main() -> bool:
        return await notifier.await_outcome(slot, position, 3600)

    assert asyncio.run(main()) is True


def test_a_waiting_coroutine_is_woken_by_the_release(engine, store):
    slot, notifier = _owned_and_listening(engine, store)

    async def main() -> bool:
        position = notifier.position()
        assert not (await store.aio().claim(slot, _running(engine, slot, OTHER), 60_000)).claimed
        waiting = asyncio.ensure_future(notifier.await_outcome(slot, position, 30))
        await asyncio.sleep(0)  # the waiter registers before the release, or finds it after
        assert await store.aio().release(slot, OWNER)
        return await asyncio.wait_for(waiting, 15)

    assert asyncio.run(main()) is True


def test_concurrent_duplicate_calls_run_once_on_either_store(engine):
    flow = RunFlow(Door.RUN, engine=engine)
    options = _options()
    ran: list[int] = []
    barrier = threading.Barrier(16)
    results: list[Any] = []

    def action() -> str:
        ran.append(1)
        time.sleep(0.3)
        return "first"

    def call() -> None:
        barrier.wait()
        results.append(flow.run("dup", action, options))

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert ran == [1] and results == ["first"] * 16


def test_concurrent_duplicate_coroutines_run_once_on_either_store(engine):
    flow = RunFlow(Door.RUN, engine=engine)
    options = _options()
    ran: list[int] = []

    async def action() -> str:
        ran.append(1)
        await asyncio.sleep(0.3)
        return "first"

    async def main() -> list[Any]:
        return await asyncio.gather(*(flow.arun("adup", action, options) for _ in range(16)))

    assert asyncio.run(main()) == ["first"] * 16 and ran == [1]


def test_the_inventory_lists_and_purges_what_the_store_holds(engine):
    flow = RunFlow(Door.RUN, engine=engine)
    for i in range(3):
        flow.run(f"listed-{i}", functools.partial(int, i), _options())
    inventory = Inventory(engine)
    assert sorted(entry.key for entry in inventory.scan()) == ["listed-0", "listed-1", "listed-2"]
    assert inventory.purge().deleted == 3
    assert list(inventory.scan()) == []


@pytest.mark.no_redis
def test_the_store_setting_picks_the_in_memory_store(settings):
    settings.IDEMPOTENCY = {"STORE": "django_idempotency.stores.memory.open_store"}
    engine = build_engine(build(settings.IDEMPOTENCY))
    try:
        assert isinstance(engine.store, MemoryStore)
        assert RunFlow(Door.RUN, engine=engine).run("k", lambda: 7, _options()) == 7
    finally:
        engine.close()


def _options() -> Any:
    from django_idempotency.api import run_options

    return run_options({"lock_ttl": 5, "wait_timeout": 10}, "run").run()
