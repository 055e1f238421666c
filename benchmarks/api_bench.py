"""``run()`` without HTTP, against the floor in raw redis-py; one subprocess per round.

Usage (``benchmarks/run.py`` calls it)::

    python -m benchmarks.api_bench --seconds 2 --order 0       # throughput, JSON out
    python -m benchmarks.api_bench --storm 100 --sleep-ms 200  # duplicate storm

``REDIS_URL`` names the server; ``PYTHONPATH`` picks the django_idempotency measured.
"""

from __future__ import annotations

import argparse
import json
import os
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
from django_redis import get_redis_connection  # type: ignore[import-untyped]  # noqa: E402

import django_idempotency  # noqa: E402
from benchmarks.floor import floor_run  # noqa: E402
from benchmarks.load import percentile  # noqa: E402
from benchmarks.probe import commandstats, reset  # noqa: E402
from django_idempotency import run, signals  # noqa: E402

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


def storm(n: int, sleep_ms: int) -> dict[str, Any]:
    """``n`` threads call ``run()`` with one key; the action sleeps ``sleep_ms``."""
    key = f"storm-{uuid.uuid4().hex}"
    stored: list[float] = []
    signals.executed.connect(lambda **kw: stored.append(time.time()), weak=False)
    stats_client = redis.Redis.from_url(os.environ["REDIS_URL"])
    # Open every connection the storm will use first: connection setup (HELLO, CLIENT
    # SETINFO) is not a waiter's cost.
    pool = get_redis_connection("default").connection_pool
    opened = [pool.get_connection() for _ in range(n)]
    for conn in opened:
        conn.connect()
        pool.release(conn)
    barrier = threading.Barrier(n)
    outcomes: list[tuple[bool, float, int]] = []
    lock = threading.Lock()

    def caller(trips: RoundTrips) -> None:
        ran = []

        def slow() -> dict[str, Any]:
            ran.append(True)
            time.sleep(sleep_ms / 1000)
            return PAYLOAD

        barrier.wait()
        run(key, slow)
        done = time.time()
        with lock:
            outcomes.append((bool(ran), done, trips.take()))

    reset(stats_client)
    with RoundTrips() as trips:
        threads = [threading.Thread(target=caller, args=(trips,)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    stats = commandstats(stats_client)
    owner_done = stored[0]
    waiters = [(done, trips) for ran, done, trips in outcomes if not ran]
    delays = sorted(done - owner_done for done, _ in waiters)
    return {
        "waiters": len(waiters),
        "owners": sum(1 for ran, _, _ in outcomes if ran),
        "delay_p50_ms": percentile(delays, 50) * 1000,
        "delay_p99_ms": percentile(delays, 99) * 1000,
        "delay_max_ms": (delays[-1] if delays else 0) * 1000,
        "delays": delays,
        "waiter_round_trips": sum(trips for _, trips in waiters),
        "waiter_round_trips_max": max((trips for _, trips in waiters), default=0),
        "commandstats": dict(Counter(stats)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--order", type=int, default=0)
    parser.add_argument("--storm", type=int, default=0)
    parser.add_argument("--sleep-ms", type=int, default=200)
    args = parser.parse_args()
    out = storm(args.storm, args.sleep_ms) if args.storm else throughput(args.seconds, args.order)
    out["code"] = os.path.dirname(django_idempotency.__file__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
