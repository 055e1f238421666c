"""``run()`` without HTTP, against the floor in raw redis-py; one subprocess per round.

Usage (``benchmarks/run.py`` calls it)::

    python -m benchmarks.api_bench --seconds 2 --order 0       # throughput, JSON out
    python -m benchmarks.api_bench --storm 1000 --sleep-ms 500 --key K [--async]
    python -m benchmarks.api_bench --wake-floor 1000 [--async]  # the storm's floor

A storm prints ``ready``, waits for a line on stdin, then releases its callers (threads
for ``run()``, asyncio tasks with ``--async`` for ``arun()``) and prints, as JSON, what
each did: outcome, the time it was stored (owner) or decided (waiter), the time it
returned, and the Redis commands it sent (``benchmarks.counting``).

``REDIS_URL`` names the server; ``PYTHONPATH`` picks the django_idempotency measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
os.environ.setdefault("BENCH_STACK", "bare")

import django

django.setup()

import redis  # noqa: E402
from django_redis import get_redis_connection  # noqa: E402

import django_idempotency  # noqa: E402
from benchmarks import clock  # noqa: E402
from benchmarks.floor import floor_run  # noqa: E402
from benchmarks.load import percentile  # noqa: E402
from benchmarks.probe import commandstats, reset  # noqa: E402
from django_idempotency import arun, run  # noqa: E402

PAYLOAD = {"id": 1234, "status": "created", "amount": 100, "currency": "EUR"}


def action() -> dict[str, Any]:
    return PAYLOAD


class RoundTrips:
    """Count round trips made by this process's redis-py connections, per thread."""

    def __init__(self) -> None:
        self.local = threading.local()
        self._original = redis.connection.AbstractConnection.send_packed_command

    def __enter__(self) -> RoundTrips:
        original, local = self._original, self.local

        def counting(conn: Any, command: Any, check_health: bool = True) -> None:
            local.n = getattr(local, "n", 0) + 1
            original(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        redis.connection.AbstractConnection.send_packed_command = self._original  # type: ignore[method-assign]

    def take(self) -> int:
        n: int = getattr(self.local, "n", 0)
        self.local.n = 0
        return n


def phases(client: Any) -> dict[str, Callable[[int], Any]]:
    prefix = uuid.uuid4().hex[:12]
    same = f"{prefix}-same"
    run(same, action)
    floor_run(client, same, action)
    return {
        "ours-first": lambda i: run(f"{prefix}-{i}", action),
        "ours-replay": lambda i: run(same, action),
        "floor-first": lambda i: floor_run(client, f"{prefix}-f{i}", action),
        "floor-replay": lambda i: floor_run(client, same, action),
    }


def throughput(seconds: float, order: int) -> dict[str, Any]:
    """Each phase runs ``seconds`` in total, in slices of 0.2 s taken in turn, so a burst
    of load from elsewhere on the machine hits every phase alike."""
    client = get_redis_connection("default")
    stats_client = redis.Redis.from_url(os.environ["REDIS_URL"])
    todo = phases(client)
    names = list(todo)
    names = names[order % len(names) :] + names[: order % len(names)]
    # Warm up: scripts loaded, connections open, code paths hot.
    for name in names:
        for i in range(200):
            todo[name](-i - 1)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    elapsed = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    stats: dict[str, Counter[str]] = {name: Counter() for name in names}
    counter = 0
    for _ in range(max(int(seconds / 0.2), 1)):
        for name in names:
            call, mine = todo[name], latencies[name]
            reset(stats_client)
            start, start_cpu = time.perf_counter(), time.process_time()
            end = start + 0.2
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    break
                call(counter)
                counter += 1
                mine.append(time.perf_counter() - t0)
            cpu[name] += time.process_time() - start_cpu
            elapsed[name] += time.perf_counter() - start
            stats[name] += commandstats(stats_client)
    results: dict[str, Any] = {}
    for name in names:
        with RoundTrips() as trips:
            for j in range(100):
                todo[name](10_000_000 + j)
            round_trips = trips.take() / 100
        mine = sorted(latencies[name])
        results[name] = {
            "calls": len(mine),
            "seconds": elapsed[name],
            "cpu_us": cpu[name] / len(mine) * 1e6,
            "p50_ms": percentile(mine, 50) * 1000,
            "p99_ms": percentile(mine, 99) * 1000,
            "commandstats": dict(stats[name]),
            "round_trips": round_trips,
        }
    return results


def storm(n: int, sleep_ms: int, key: str, use_async: bool) -> dict[str, Any]:
    """``n`` callers of ``run()`` (threads) or ``arun()`` (tasks) with one key.

    The action sleeps ``sleep_ms``. Callers are started and held at a barrier; this
    process prints ``ready`` and releases them when a line arrives on stdin, so that
    several processes storm the same key at once (``benchmarks/storm.py``).
    """
    clock.install()
    # Connections open, scripts loaded, notifier subscribed: not a waiter's cost. A
    # process subscribes at its first wait unless told to sooner, and that first wait
    # looks at the record once more (the subscription was not live at its claim): a
    # server pays it once in its life, not once per storm.
    _subscribed()
    warm = f"warm-{uuid.uuid4().hex}"
    if use_async:
        return asyncio.run(_astorm(n, sleep_ms, key, warm))
    run(warm, action)
    run(warm, action)
    callers: list[dict[str, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)

    def slow() -> dict[str, Any]:
        time.sleep(sleep_ms / 1000)
        return PAYLOAD

    def caller() -> None:
        barrier.wait()
        me = clock.begin()
        try:
            got = run(key, slow) == PAYLOAD
        except Exception as exc:
            me.outcome, got = f"{type(exc).__name__}", False
        done = time.time()
        with lock:
            callers.append({**me.as_dict(), "done": done, "ok": got})

    threads = [threading.Thread(target=caller) for _ in range(n)]
    for t in threads:
        t.start()
    _ready()
    barrier.wait()
    for t in threads:
        t.join()
    return {"pid": os.getpid(), "callers": callers}


async def _astorm(n: int, sleep_ms: int, key: str, warm: str) -> dict[str, Any]:
    await arun(warm, _aaction)
    await arun(warm, _aaction)
    go = asyncio.Event()
    # Raw, made into dicts after the storm: one caller's bookkeeping would delay the next.
    returned: list[tuple[clock.Caller, float, bool]] = []

    async def slow() -> dict[str, Any]:
        await asyncio.sleep(sleep_ms / 1000)
        return PAYLOAD

    async def caller() -> None:
        await go.wait()
        me = clock.begin()
        try:
            got = await arun(key, slow) == PAYLOAD
        except Exception as exc:
            me.outcome, got = f"{type(exc).__name__}", False
        returned.append((me, time.time(), got))

    tasks = [asyncio.create_task(caller()) for _ in range(n)]
    await asyncio.sleep(0)  # every task waits on the event
    await asyncio.get_running_loop().run_in_executor(None, _ready)
    go.set()
    await asyncio.gather(*tasks)
    callers = [{**me.as_dict(), "done": done, "ok": got} for me, done, got in returned]
    return {"pid": os.getpid(), "callers": callers}


async def _aaction() -> dict[str, Any]:
    return PAYLOAD


def wake_floor(n: int, use_async: bool) -> dict[str, Any]:
    """The storm's floor: ``n`` waiters on one event, no Redis and no library at all.

    Threads wait on one ``threading.Event`` (or tasks on one ``asyncio.Event``); the
    delay of each is when it ran again minus when the event was set. No design that
    wakes ``n`` waiting threads (or tasks) of one process can beat it by much.
    """
    if use_async:
        return asyncio.run(_awake_floor(n))
    event = threading.Event()
    woke: list[float] = []
    lock = threading.Lock()

    def waiter() -> None:
        event.wait()
        now = time.time()
        with lock:
            woke.append(now)

    threads = [threading.Thread(target=waiter) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # every thread is waiting
    set_at = time.time()
    event.set()
    for t in threads:
        t.join()
    return {"delays": sorted(t - set_at for t in woke)}


async def _awake_floor(n: int) -> dict[str, Any]:
    event = asyncio.Event()
    woke: list[float] = []

    async def waiter() -> None:
        await event.wait()
        woke.append(time.time())

    tasks = [asyncio.create_task(waiter()) for _ in range(n)]
    await asyncio.sleep(0.1)
    set_at = time.time()
    event.set()
    await asyncio.gather(*tasks)
    return {"delays": sorted(t - set_at for t in woke)}


def _subscribed() -> None:
    """Have this process's notifier subscribe now, and wait until it has."""
    from django_idempotency.runtime import get_engine

    notifier = get_engine().store.notifier
    notifier.start()
    deadline = time.monotonic() + 10
    while notifier.position()[0] == 0:  # the subscription's epoch: 0 until it is live
        if time.monotonic() > deadline:
            raise RuntimeError("the notifier did not subscribe within 10 s")
        time.sleep(0.005)


def _ready() -> None:
    """Say ``ready`` and wait for the go-ahead (a line on stdin; none when it is closed)."""
    print("ready", flush=True)
    sys.stdin.readline()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--order", type=int, default=0)
    parser.add_argument("--storm", type=int, default=0, help="callers of one key")
    parser.add_argument("--sleep-ms", type=int, default=200)
    parser.add_argument("--key", default="")
    parser.add_argument("--async", dest="use_async", action="store_true", help="arun(), tasks")
    parser.add_argument("--wake-floor", type=int, default=0, help="waiters on one event")
    args = parser.parse_args()
    if args.wake_floor:
        out = wake_floor(args.wake_floor, args.use_async)
    elif args.storm:
        out = storm(args.storm, args.sleep_ms, args.key or uuid.uuid4().hex, args.use_async)
    else:
        out = throughput(args.seconds, args.order)
    out["code"] = os.path.dirname(django_idempotency.__file__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
