"""Where a request's time goes, layer by layer, in one process (no network but Redis).

The throughput targets compare us with a floor that only sends two plain Redis commands;
this shows what our path spends beyond its round trips, so a missed target comes with
the profile that explains it::

    python benchmarks/breakdown.py            # µs per request, by layer, first-time and replay

Each layer is timed by wrapping it with ``time.perf_counter`` (inclusive of what it
calls; the wrappers add about 0.3 µs each). ``store._send`` is the round trip itself
(write the script call, read the reply); everything else is Python on our side. The
floor and bare totals come from the same process, measured in between, so the load of
the machine hits all of them alike.
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.append(str(ROOT))

from benchmarks import inproc  # noqa: E402
from django_idempotency.testing import RedisServer  # noqa: E402

spent: collections.defaultdict[str, float] = collections.defaultdict(float)
#: The labels in the order they are printed (callers before what they call).
ORDER: list[str] = []


def timed(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name`` so its inclusive time adds up under ``label``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - started

    setattr(owner, name, wrapper)
    ORDER.append(label)


def instrument() -> None:
    from django_idempotency import engine, lease, records
    from django_idempotency.doors import middleware
    from django_idempotency.flows import http
    from django_idempotency.stores.redis import store

    for owner, name, label in (
        (middleware.IdempotencyMiddleware, "__call__", "middleware (all of it)"),
        (middleware.IdempotencyMiddleware, "process_view", "  process_view"),
        (http.HttpFlow, "begin", "    flow.begin"),
        (http.HttpFlow, "_prepare", "      key, scope, fingerprint"),
        (engine.Engine, "acquire", "      engine.acquire"),
        (records.Sealer, "running", "        sign the running record"),
        (store.RedisStore, "claim", "        store.claim"),
        (records.Sealer, "open", "        verify + open the record"),
        (engine.Engine, "_claimed", "        claim + lease objects"),
        (lease.LeaseKeeper, "hold", "          keeper.hold"),
        (http, "replay_response", "      build the replayed response"),
        (http.HttpFlow, "finish", "  flow.finish"),
        (engine.Engine, "complete", "    engine.complete"),
        (records.Sealer, "seal", "      seal the final record"),
        (store.RedisStore, "_send", "round trips (store._send)"),
    ):
        timed(owner, name, label)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    with RedisServer() as redis:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="benchmarks.settings", BENCH_STACK="bare", REDIS_URL=redis.url
        )
        import django

        django.setup()
        from django_idempotency.runtime import get_engine

        instrument()
        cases = inproc.cases(inproc.handlers())
        totals: dict[str, float] = {}
        layers: dict[str, dict[str, float]] = {}
        for stack in ("bare", "floor", "middleware"):
            for name in (f"{stack}:first", f"{stack}:replay"):
                if name not in cases:
                    continue
                run = cases[name]
                for i in range(300):
                    run(i)
                spent.clear()
                started = time.perf_counter()
                for i in range(n):
                    run(1000 + i)
                totals[name] = (time.perf_counter() - started) / n * 1e6
                layers[name] = {k: v / n * 1e6 for k, v in spent.items()}
        get_engine().close()
    print(f"µs per request, {n} requests per case, one process")
    for name, total in totals.items():
        print(f"{name:20} {total:8.1f}")
    for name in ("middleware:first", "middleware:replay"):
        print(f"\n{name}: by layer (inclusive)")
        for label in ORDER:
            if label in layers[name]:
                print(f"  {label:40} {layers[name][label]:8.1f}")


if __name__ == "__main__":
    main()
