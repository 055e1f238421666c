"""The plain-Python door, run()/arun(), against real Redis, threads and processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import pytest
import redis

from django_idempotency import (
    IdempotencyTimeout,
    IdempotencyUnavailable,
    NotReplayable,
    ReplayedError,
    ResultNotStored,
    arun,
    run,
)
from django_idempotency.conf import get_settings
from django_idempotency.engine import Engine
from django_idempotency.events import Door
from django_idempotency.flights import Flights
from django_idempotency.flows.run import RunFlow
from django_idempotency.runtime import sealer_for
from django_idempotency.stores.redis import RedisStore

from .support import workers
from .support.records import RUN, name_of
from .support.servers import eventually

pytestmark = [pytest.mark.matrix, pytest.mark.core]

#: The tests also run on a 3-primary Redis Cluster.
BOTH_TOPOLOGIES = pytest.mark.topologies("single", "cluster")


class Counter:
    """A thread-safe call counter used as the action's side effect."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def bump(self) -> int:
        with self._lock:
            self.n += 1
            return self.n


class PaymentDeclined(Exception):
    pass


@BOTH_TOPOLOGIES
def test_second_call_replays_value_without_running_action():
    counter = Counter()
    first = run("order-1", lambda: {"charged": counter.bump()})
    second = run("order-1", lambda: {"charged": counter.bump()})
    assert first == second == {"charged": 1}
    assert counter.n == 1


@BOTH_TOPOLOGIES
def test_64_threads_with_one_key_run_the_action_once():
    counter = Counter()
    barrier = threading.Barrier(64)
    results: list[Any] = []

    def action() -> dict[str, Any]:
        n = counter.bump()
        time.sleep(0.2)
        return {"run": n, "thread": threading.get_ident()}

    def call() -> None:
        barrier.wait()
        results.append(run("shared", action))

    threads = [threading.Thread(target=call) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.n == 1
    assert len(results) == 64
    assert all(r == results[0] for r in results)


def test_4_processes_with_one_key_run_the_action_once(redis_url, redis_client):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(4)
    with ctx.Pool(4) as pool:
        results = pool.starmap(
            workers.run_counted,
            [(redis_url, "proc-key", "executions", 0.5, barrier)] * 4,
        )
    assert int(redis_client.get("executions")) == 1
    assert all(r == results[0] for r in results)
    assert len({r["pid"] for r in results}) == 1


@BOTH_TOPOLOGIES
def test_error_is_stored_and_reraised_on_replay():
    counter = Counter()

    def declined() -> None:
        counter.bump()
        raise PaymentDeclined("card declined", 402)

    with pytest.raises(PaymentDeclined) as first:
        run("pay", declined)
    with pytest.raises(PaymentDeclined) as replay:
        run("pay", declined)
    assert counter.n == 1
    assert replay.value.args == first.value.args == ("card declined", 402)


@BOTH_TOPOLOGIES
def test_should_ignore_error_releases_the_key_so_the_next_call_runs():
    counter = Counter()

    def flaky() -> str:
        if counter.bump() == 1:
            raise TimeoutError("gateway timeout")
        return "ok"

    with pytest.raises(TimeoutError):
        run("flaky", flaky, should_ignore_error=lambda e: isinstance(e, TimeoutError))
    assert run("flaky", flaky) == "ok"
    assert counter.n == 2


def test_error_whose_class_cannot_be_rebuilt_replays_as_replayed_error():
    class LocalError(Exception):  # a <locals> class: not reachable on replay
        pass

    def fail() -> None:
        raise LocalError("boom")

    with pytest.raises(LocalError):
        run("local", fail)
    with pytest.raises(ReplayedError) as replay:
        run("local", fail)
    assert replay.value.type_name.endswith("LocalError")
    assert replay.value.message == "boom"


def test_callbacks_fire_for_success_error_and_both_replays():
    seen: list[tuple[str, Any]] = []
    callbacks: dict[str, Any] = {
        "on_action_success": lambda k, v: seen.append(("success", v)),
        "on_action_error": lambda k, e: seen.append(("error", str(e))),
        "on_success_replay": lambda k, v: seen.append(("success_replay", v)),
        "on_error_replay": lambda k, e: seen.append(("error_replay", str(e))),
    }
    run("cb-ok", lambda: 7, **callbacks)
    run("cb-ok", lambda: 8, **callbacks)

    def fail() -> None:
        raise ValueError("nope")

    for _ in range(2):
        with pytest.raises(ValueError):
            run("cb-err", fail, **callbacks)
    assert seen == [
        ("success", 7),
        ("success_replay", 7),
        ("error", "nope"),
        ("error_replay", "nope"),
    ]


@BOTH_TOPOLOGIES
@pytest.mark.parametrize(
    "a, b",
    [("a:b", "a_b"), ("x:y:z", "x:y"), (b"\x00\xff", b"\x00\xfe"), ("*", "?")],
)
def test_distinct_keys_never_share_a_record(a, b):
    assert run(a, lambda: "first") == "first"
    assert run(b, lambda: "second") == "second"


@BOTH_TOPOLOGIES
def test_scopes_separate_equal_keys_even_with_colons():
    assert run("k", lambda: 1, scope="a:b") == 1
    assert run("b:k", lambda: 2, scope="a") == 2
    assert run("k", lambda: 3, scope="a:b") == 1


@BOTH_TOPOLOGIES
def test_redis_keys_never_contain_the_client_key(redis_client):
    run("secret-key-with-*-glob", lambda: 1)
    names = [k.decode() for k in redis_client.keys("*")]
    assert names and not any("secret" in n or "*" in n.split("{")[1] for n in names)


@BOTH_TOPOLOGIES
def test_record_expires_after_ttl_and_action_runs_again(redis_client):
    counter = Counter()
    run("short", counter.bump, ttl=0.3)
    assert redis_client.pttl(name_of(RUN, "", "short")) <= 300
    time.sleep(0.45)
    assert run("short", counter.bump, ttl=0.3) == 2


@BOTH_TOPOLOGIES
def test_long_action_keeps_its_claim_through_renewal():
    counter = Counter()
    results: list[Any] = []

    def slow() -> int:
        n = counter.bump()
        time.sleep(1.5)  # three times the lease below
        return n

    owner = threading.Thread(target=lambda: results.append(run("slow", slow, lock_ttl=0.5)))
    owner.start()
    time.sleep(0.1)
    later = run("slow", slow, lock_ttl=0.5, wait_timeout=5)
    owner.join()
    assert counter.n == 1
    assert results == [later] == [1]


@BOTH_TOPOLOGIES
def test_late_finisher_whose_lease_was_lost_does_not_overwrite_new_owner(redis_client):
    name = name_of(RUN, "", "fenced")
    newer: list[Any] = []

    def first_owner() -> str:
        # Simulate the lease running out under a stalled owner; a new caller takes over.
        redis_client.delete(name)
        newer.append(run("fenced", lambda: "second owner"))
        return "first owner"

    with pytest.raises(ResultNotStored) as critical:
        run("fenced", first_owner)
    assert critical.value.value == "first owner"
    assert newer == ["second owner"]
    assert run("fenced", lambda: "third") == "second owner"


@BOTH_TOPOLOGIES
def test_waiter_is_woken_on_completion_not_by_polling():
    done_at: list[float] = []

    def owner_action() -> str:
        time.sleep(0.3)
        done_at.append(time.monotonic())
        return "v"

    owner = threading.Thread(target=run, args=("wake", owner_action))
    owner.start()
    time.sleep(0.05)
    # The lease (5 s) is far longer than the action: only a wake-up ends the wait early.
    assert run("wake", lambda: "never") == "v"
    woke_at = time.monotonic()
    owner.join()
    assert woke_at - done_at[0] < 0.5  # a 1 s poll would have overshot


@BOTH_TOPOLOGIES
def test_waiter_times_out_with_idempotency_timeout():
    release = threading.Event()
    owner = threading.Thread(target=run, args=("stuck", lambda: release.wait(5)))
    owner.start()
    time.sleep(0.05)
    try:
        with pytest.raises(IdempotencyTimeout):
            run("stuck", lambda: "never", wait_timeout=0.2)
    finally:
        release.set()
        owner.join()


def test_sigkilled_owner_blocks_until_lease_expires_then_action_runs_again(redis_url, redis_client):
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=workers.run_forever, args=(redis_url, "crash", "started", 1.0))
    proc.start()
    deadline = time.monotonic() + 30
    while not redis_client.get("started"):
        assert time.monotonic() < deadline, "child never started its action"
        time.sleep(0.02)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    with pytest.raises(IdempotencyTimeout):
        run("crash", lambda: "too early", wait_timeout=0.2)
    # A waiter with enough patience sees the lease run out and runs the action itself.
    assert run("crash", lambda: "second run", wait_timeout=5) == "second run"


@BOTH_TOPOLOGIES
def test_unserializable_result_is_never_run_twice():
    counter = Counter()
    with pytest.raises(ResultNotStored) as critical:
        run("obj", lambda: {counter.bump()})  # a set is not JSON
    assert critical.value.value == {1}
    with pytest.raises(NotReplayable):
        run("obj", lambda: {counter.bump()})
    assert counter.n == 1


def test_keyboard_interrupt_releases_without_storing():
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("ki", interrupted)
    assert run("ki", lambda: "ran again") == "ran again"


@BOTH_TOPOLOGIES
def test_arun_runs_a_coroutine_once_for_concurrent_callers():
    counter = Counter()

    async def action() -> int:
        n = counter.bump()
        await asyncio.sleep(0.2)
        return n

    async def main() -> list[int]:
        return await asyncio.gather(*(arun("async", action) for _ in range(10)))

    assert asyncio.run(main()) == [1] * 10
    assert counter.n == 1


def test_arun_replays_errors():
    async def fail() -> None:
        raise PaymentDeclined("no")

    for _ in range(2):
        with pytest.raises(PaymentDeclined):
            asyncio.run(arun("async-err", fail))


@pytest.mark.parametrize("bad", [0, -1, "5", True])
def test_run_rejects_bad_durations(bad):
    with pytest.raises(ValueError, match="ttl"):
        run("k", lambda: 1, ttl=bad)


def test_unreachable_redis_fails_closed_without_running(settings):
    settings.IDEMPOTENCY = {"REDIS": "redis://127.0.0.1:1/0"}
    counter = Counter()
    with pytest.raises(IdempotencyUnavailable):
        run("down", counter.bump)
    assert counter.n == 0


def test_unreachable_redis_fail_open_runs_and_warns(settings, caplog):
    settings.IDEMPOTENCY = {"REDIS": "redis://127.0.0.1:1/0", "ON_REDIS_ERROR": "fail_open"}
    counter = Counter()
    with caplog.at_level(logging.WARNING, logger="django_idempotency"):
        assert run("down", counter.bump) == 1
    assert counter.n == 1
    assert any("without idempotency" in r.getMessage() for r in caplog.records)


def test_wait_longer_than_socket_timeout_is_not_an_outage(settings, redis_url):
    # django-redis users often set SOCKET_TIMEOUT below WAIT_TIMEOUT: waits must be
    # sliced under it, not surface as "Redis unavailable".
    settings.IDEMPOTENCY = {"REDIS": redis_url + "?socket_timeout=0.3", "WAIT_TIMEOUT": 5}
    results: list[Any] = []

    def slow() -> str:
        time.sleep(1.0)
        return "done"

    owner = threading.Thread(target=lambda: results.append(run("sliced", slow)))
    owner.start()
    time.sleep(0.05)
    assert run("sliced", lambda: "never") == "done"
    owner.join()
    assert results == ["done"]


@BOTH_TOPOLOGIES
def test_keeper_reports_a_lost_lease_once_with_the_signal(redis_client, caplog):
    from django_idempotency import signals

    lost: list[Any] = []

    def receiver(sender: Any, **kw: Any) -> None:
        lost.append((kw["scope"], kw["key"]))

    signals.lease_lost.connect(receiver)
    name = name_of(RUN, "ns", "stolen")

    def action() -> str:
        redis_client.delete(name)  # as if the lease had expired
        time.sleep(0.5)  # the keeper renews at lock_ttl / 3 and finds it gone
        return "late"

    try:
        with pytest.raises(ResultNotStored):
            run("stolen", action, scope="ns", lock_ttl=0.3)
    finally:
        signals.lease_lost.disconnect(receiver)
    assert lost == [("ns", "stolen")]
    # Logged once at ERROR too, by the one place every outcome goes through.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "lease lost" in r.message]
    assert len(errors) == 1, [r.message for r in errors]


def test_keeper_sleeps_through_sequential_leases_and_wakes_for_a_shorter_one():
    from django_idempotency.lease import Lease, LeaseKeeper

    keeper = LeaseKeeper()
    woken: list[float] = []
    notify = keeper._cond.notify

    def counted(n: int = 1) -> None:
        woken.append(time.monotonic())
        notify(n)

    keeper._cond.notify = counted  # type: ignore[method-assign]
    slot = RedisStore(redis.Redis(), "t").slot(b"\0" * 12)

    def hold_and_drop(lease_ms: int) -> None:
        lease = keeper.hold(Lease(None, slot, b"t" * 12, lease_ms, lambda: None))  # type: ignore[arg-type]
        keeper.drop(lease)

    hold_and_drop(30_000)  # starts the thread
    deadline = time.monotonic() + 10
    while keeper._wake_at == float("-inf") and time.monotonic() < deadline:
        time.sleep(0.001)  # until the thread sleeps
    assert keeper._wake_at != float("-inf")
    # A request after another: each lease is due after the thread's planned wake-up.
    for _ in range(50):
        hold_and_drop(30_000)
    assert woken == []
    # A lease due sooner than that wake-up must still be renewed in time.
    hold_and_drop(3_000)
    assert len(woken) == 1


class CountingStore(RedisStore):
    """A real store that counts the script calls it sends (the waiter's own commands)."""

    sent = 0

    def _eval(self, *args: Any) -> Any:
        type(self).sent += 1
        return super()._eval(*args)


class Waiter:
    """A caller in this process that does not coalesce with its other callers."""

    def __init__(self, client: redis.Redis) -> None:
        CountingStore.sent = 0
        self.store = CountingStore(client, "idem")
        self.engine = Engine(self.store, sealer_for(get_settings()), flights=Flights())
        self.flow = RunFlow(Door.RUN, engine=self.engine)

    def run(self, key: str, action: Any, **options: Any) -> Any:
        from django_idempotency.api import run_options

        return self.flow.run(key, action, run_options(options, "run").run())

    def close(self) -> None:
        self.engine.close()


def _waiter_service(redis_url: str) -> Waiter:
    return Waiter(redis.Redis.from_url(redis_url))


def _owner(key: str, seconds: float, lock_ttl: float) -> threading.Thread:
    def action() -> str:
        time.sleep(seconds)
        return "owner's"

    thread = threading.Thread(target=run, args=(key, action), kwargs={"lock_ttl": lock_ttl})
    thread.start()
    time.sleep(0.1)  # let the owner claim first
    return thread


def test_woken_waiter_gets_the_record_with_its_wake_up(redis_url):
    waiter = _waiter_service(redis_url)
    waiter.store.notifier.start()  # a process that has waited before: subscribed
    eventually(lambda: waiter.store.notifier.epoch, what="the subscription")
    owner = _owner("storm", 0.3, lock_ttl=5)
    assert waiter.run("storm", lambda: "waiter's") == "owner's"
    owner.join()
    # The claim, then one claim after the notification, which returns the record.
    assert CountingStore.sent <= 2


def test_first_waiter_of_a_process_subscribes_then_is_woken(redis_url):
    waiter = _waiter_service(redis_url)
    assert waiter.store.notifier.epoch == 0  # building the engine subscribed nothing
    owner = _owner("first", 0.5, lock_ttl=5)
    assert waiter.run("first", lambda: "waiter's") == "owner's"
    owner.join()
    # The claim, one more once the subscription is live, one after the notification.
    assert CountingStore.sent <= 3


def test_waiter_looks_once_per_lease_however_often_it_is_renewed(redis_url):
    waiter = _waiter_service(redis_url)
    # The owner renews ~20 times (every lease / 3) while the waiter waits.
    lock_ttl, busy = 0.2, 1.5
    owner = _owner("renewed", busy, lock_ttl=lock_ttl)
    assert waiter.run("renewed", lambda: "waiter's", wait_timeout=5) == "owner's"
    owner.join()
    # A renewed lease has at least two thirds of its length left, so the waiter looks
    # at most once per two thirds of a lease (a dead owner is noticed when its lease
    # ends), plus the claim, the subscription's look and the one after the notification.
    assert CountingStore.sent <= busy / (lock_ttl * 2 / 3) + 3


def test_waits_sliced_under_the_socket_timeout_do_not_claim_again(settings, redis_url):
    settings.IDEMPOTENCY = {"REDIS": redis_url, "WAIT_TIMEOUT": 5, "LOCK_TTL": 30}
    waiter = Waiter(redis.Redis.from_url(redis_url + "?socket_timeout=0.3"))
    owner = _owner("sliced-count", 1.0, lock_ttl=30)
    assert waiter.run("sliced-count", lambda: "waiter's") == "owner's"
    owner.join()
    # Waiting holds no connection, so the socket timeout cuts nothing: one claim, then
    # one after the notification.
    assert CountingStore.sent <= 1 + 1.0 / 0.15 + 1
