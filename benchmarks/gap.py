"""Where the gap to each hot-path target goes: one process, part by part, Redis included.

``make bench`` runs this as a script (``REDIS_URL`` set to its Redis, ``BENCH_QUICK=1``
under ``--quick``) and includes the Markdown section it prints. Standalone::

    python benchmarks/gap.py          # starts its own redis-server

No HTTP server and no load generator: each request goes through Django's ``WSGIHandler``
in this process (``benchmarks.inproc``), so what is left is our code, the floor's code
and the Redis round trips. Three measurements per target, interleaved round by round:

1. **Totals**, uninstrumented: µs per request for the floor and for us, and the ratio
   within each round (median over rounds). The budget is what we may spend and still
   meet the target: ``floor / target``.
2. **Redis's own time** per request: ``INFO commandstats`` (``usec``) over each phase,
   our Lua scripts against the floor's plain commands.
3. **Parts**, instrumented: each part of our path timed inclusively with
   ``time.perf_counter`` (a wrapper adds about 0.3 µs). A part's row says which
   guarantee it pays for, so a missed target comes with what it would cost to meet it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.append(str(ROOT))

QUICK = bool(os.environ.get("BENCH_QUICK"))
N = 300 if QUICK else 1500
ROUNDS = 2 if QUICK else 7
PART_N = 500 if QUICK else 3000

spent: collections.defaultdict[str, float] = collections.defaultdict(float)


@dataclass(frozen=True)
class Part:
    """One timed piece of a path: where it lives, its label, what it pays for."""

    owner: str
    name: str
    label: str
    why: str


# The parts every door's path shares (the engine, the records, the store).
SIGN = Part("records.Sealer", "running", "    sign the running record", "integrity (MAC)")
CLAIM = Part("store.RedisStore", "claim", "    claim (one round trip)", "atomic, fenced claim")
LEASE = Part(
    "engine.Engine", "_claimed", "    claim and lease objects", "lease renewal while it runs"
)
SEAL = Part("records.Sealer", "seal", "    seal the final record", "integrity, compression")
STORE = Part("store.RedisStore", "complete", "    store (one round trip)", "fenced, publishes")
FLOOR_TRIPS = Part(
    "redis.Redis", "execute_command", "floor: its round trips", "raw redis-py SET / GET"
)

# Nested labels are inclusive: a part's time includes the parts indented under it.
HTTP_PARTS = (
    Part("drf.IdempotentMixin", "initial", "mixin: initial()", ""),
    Part(
        "APIView",
        "initial",
        "  DRF's own initial()",
        "authentication, permissions, throttles (the DRF floor's replay skips the view)",
    ),
    Part(
        "APIView",
        "perform_content_negotiation",
        "    content negotiation",
        "DRF picks a renderer (not needed to replay)",
    ),
    Part("http.HttpFlow", "begin", "  flow.begin", ""),
    Part(
        "http.HttpFlow",
        "_prepare",
        "    key, scope, fingerprint",
        "reads the key and the body; the 422 on a changed payload",
    ),
    SIGN,
    CLAIM,
    LEASE,
    Part("records.Sealer", "open", "    verify and open the record", "integrity, decompression"),
    Part(
        "http",
        "replay_response",
        "    build the replayed response",
        "status, headers and body as stored",
    ),
    Part("http.HttpFlow", "finish", "  flow.finish", ""),
    Part("http.HttpFlow", "_plan", "    decide what to store", "which statuses are kept"),
    Part("http", "open_transactions", "    open-transaction check", "store only after commit"),
    SEAL,
    STORE,
)
RUN_PARTS = (
    Part("run.RunFlow", "begin", "  flow.begin", ""),
    SIGN,
    CLAIM,
    LEASE,
    Part("run.RunFlow", "succeeded", "  flow.succeeded", ""),
    Part("run.RunFlow", "_value_plan", "    serialize the value", "JSON, as the floor"),
    SEAL,
    STORE,
)


@dataclass(frozen=True)
class Target:
    """A hot-path target: our case against the floor's, and the ratio to reach."""

    label: str
    floor: str
    ours: str
    want: float
    parts: tuple[Part, ...]


TARGETS = (
    Target("first-time, middleware", "floor:first", "middleware:first", 0.95, HTTP_PARTS),
    Target("replay, middleware", "floor:replay", "middleware:replay", 1.10, HTTP_PARTS),
    Target("first-time, DRF mixin", "floor-drf:first", "mixin:first", 0.95, HTTP_PARTS),
    Target("replay, DRF mixin", "floor-drf:replay", "mixin:replay", 1.10, HTTP_PARTS),
    Target("first-time, run()", "floor-run:first", "run:first", 0.95, RUN_PARTS),
)


def _resolve(owner: str) -> Any:
    import redis
    from rest_framework.views import APIView

    from django_idempotency import engine, records
    from django_idempotency.doors import drf, middleware
    from django_idempotency.flows import http, run
    from django_idempotency.stores.redis import store

    modules = {
        "middleware": middleware,
        "drf": drf,
        "http": http,
        "run": run,
        "records": records,
        "store": store,
        "engine": engine,
        "redis": redis,
    }
    if owner == "APIView":
        return APIView
    head, _, rest = owner.partition(".")
    found = modules[head]
    return getattr(found, rest) if rest else found


@contextlib.contextmanager
def timing(parts: tuple[Part, ...]) -> Iterator[None]:
    """Wrap every part so its inclusive time adds up under its label; unwrap after."""
    undo = []
    for part in parts:
        owner = _resolve(part.owner)
        original = (
            owner.__dict__[part.name] if isinstance(owner, type) else getattr(owner, part.name)
        )

        def wrapper(*args: Any, _f: Any = original, _l: str = part.label, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return _f(*args, **kw)
            finally:
                spent[_l] += time.perf_counter() - started

        setattr(owner, part.name, functools.wraps(original)(wrapper))
        undo.append((owner, part.name, original))
    try:
        yield
    finally:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)


def cases() -> dict[str, Callable[[int], Any]]:
    from django_redis import get_redis_connection

    from benchmarks import inproc
    from benchmarks.api_bench import action
    from benchmarks.floor import floor_run
    from django_idempotency import run

    out = inproc.cases(inproc.handlers())
    client = get_redis_connection("default")
    prefix = uuid.uuid4().hex[:12]
    out["run:first"] = lambda i: run(f"{prefix}-r{i}", action)
    out["floor-run:first"] = lambda i: floor_run(client, f"{prefix}-f{i}", action)
    return out


def redis_usec(client: Any) -> float:
    """The server's time for the commands sent. An EVALSHA's own figure includes the
    commands its script ran, which commandstats also counts under their own names."""
    stats = client.info("commandstats")
    if "cmdstat_evalsha" in stats:
        return float(stats["cmdstat_evalsha"]["usec"])
    return float(sum(v["usec"] for k, v in stats.items() if "config" not in k))


def measure(todo: dict[str, Callable[[int], Any]], client: Any) -> dict[str, dict[str, Any]]:
    """Uninstrumented µs per call and Redis µs per call, for each case, round by round."""
    for run in todo.values():
        for i in range(200):
            run(-i - 1)
    walls: dict[str, list[float]] = {name: [] for name in todo}
    server: dict[str, list[float]] = {name: [] for name in todo}
    for r in range(ROUNDS):
        for name, run in todo.items():
            client.config_resetstat()
            started = time.perf_counter()
            for i in range(N):
                run(r * N + i)
            walls[name].append((time.perf_counter() - started) / N * 1e6)
            server[name].append(redis_usec(client) / N)
    return {name: {"walls": walls[name], "redis": statistics.median(server[name])} for name in todo}


def part_times(run: Callable[[int], Any], parts: tuple[Part, ...]) -> dict[str, float]:
    with timing((*parts, FLOOR_TRIPS)):
        for i in range(100):
            run(-10_000 - i)
        spent.clear()
        for i in range(PART_N):
            run(10_000_000 + i)
    return {label: seconds / PART_N * 1e6 for label, seconds in spent.items()}


def report(results: dict[str, dict[str, Any]], parts: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "## Where the gap to each hot-path target goes (one process, no HTTP server)",
        "",
        f"Each request through Django's `WSGIHandler` in this process; {ROUNDS} interleaved",
        f"rounds of {N} requests per case. Budget: the most we may spend per request and",
        "still meet the target (the floor's time divided by the target ratio). Redis µs:",
        "the server's own time per request (INFO commandstats). The parts are timed",
        f"separately over {PART_N} requests with wrappers (about 0.3 µs each); indented",
        "parts are included in the row above them.",
        "",
        "The gap (ours less the floor) splits in two. Round trips: our claim and store",
        "parts (our encoding, the wait, Redis's work, our parsing) less the floor's redis-py",
        "calls (redis-py's encoding, the wait, Redis's work, its parsing). The rest: our",
        "Python outside the round trips. The split takes the parts from the instrumented",
        "pass and the totals from the plain one, so it is good to a few µs.",
        "",
        "| target | floor µs/req | ours µs/req | x floor | budget µs | over budget µs "
        "| Redis µs: floor / ours | gap µs: round trips + our Python |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for t in TARGETS:
        floor, ours = results[t.floor], results[t.ours]
        ratios = [f / o for f, o in zip(floor["walls"], ours["walls"], strict=True)]
        f_us, o_us = statistics.median(floor["walls"]), statistics.median(ours["walls"])
        budget = f_us / t.want
        # The round trips: our claim and store against the floor's redis-py calls.
        ours_trips = sum(parts[t.ours].get(p.label, 0.0) for p in (CLAIM, STORE))
        floor_trips = parts[t.floor].get(FLOOR_TRIPS.label, 0.0)
        trips = ours_trips - floor_trips
        lines.append(
            f"| {t.label} (≥ {t.want:.2f}) | {f_us:.0f} | {o_us:.0f} "
            f"| {statistics.median(ratios):.2f} | {budget:.0f} | {o_us - budget:+.0f} "
            f"| {floor['redis']:.1f} / {ours['redis']:.1f} "
            f"| {o_us - f_us:+.0f} = {trips:+.0f} {o_us - f_us - trips:+.0f} |"
        )
    for t in TARGETS:
        got = parts[t.ours]
        floor_trips = parts[t.floor].get(FLOOR_TRIPS.label)
        lines += ["", f"**{t.label}**: our parts, µs per request", ""]
        lines += ["| part | µs | what it pays for |", "|---|--:|---|"]
        shown = [p for p in t.parts if p.label in got]
        for i, part in enumerate(shown):
            lines.append(f"| `{part.label}` | {got[part.label]:.1f} | {part.why} |")
            depth = _depth(part.label)
            children = []
            for later in shown[i + 1 :]:
                if _depth(later.label) <= depth:
                    break
                if _depth(later.label) == depth + 2:
                    children.append(got[later.label])
            if children:
                rest = got[part.label] - sum(children)
                label = " " * (depth + 2) + "the rest of it"
                lines.append(f"| `{label}` | {rest:.1f} | its own code, not the parts under it |")
        if floor_trips is not None:
            lines.append(f"| `{FLOOR_TRIPS.label}` | {floor_trips:.1f} | {FLOOR_TRIPS.why} |")
    return lines


def _depth(label: str) -> int:
    return len(label) - len(label.lstrip(" "))


def main() -> None:
    with contextlib.ExitStack() as stack:
        url = os.environ.get("REDIS_URL")
        if not url:
            from django_idempotency.testing import RedisServer

            url = stack.enter_context(RedisServer()).url
        os.environ.update(
            DJANGO_SETTINGS_MODULE="benchmarks.settings", BENCH_STACK="bare", REDIS_URL=url
        )
        import django

        django.setup()
        from django_redis import get_redis_connection

        from django_idempotency.runtime import get_engine

        stack.callback(lambda: get_engine().close())
        todo = cases()
        names = [name for t in TARGETS for name in (t.floor, t.ours)]
        results = measure(
            {name: todo[name] for name in dict.fromkeys(names)}, get_redis_connection()
        )
        parts = {
            name: part_times(
                todo[name], next(t.parts for t in TARGETS if name in (t.floor, t.ours))
            )
            for name in dict.fromkeys(names)
        }
    print("\n".join(report(results, parts)))


if __name__ == "__main__":
    main()
