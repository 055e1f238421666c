"""Edge replays against the in-Django replay and the raw-Redis floor, in one run.

``benchmarks/run.py`` (``make bench``) runs it and prints its section; alone::

    REDIS_URL=redis://127.0.0.1:6379/0 python benchmarks/edge.py

Two servers, each with one worker and 8 connections in flight: uvicorn serving an async
view, gunicorn's sync worker serving a sync one. On each, three stacks of the same
project are measured interleaved, first-time (a fresh key per request) and replay (one
key): the floor (a middleware doing only the Redis work any idempotency layer must do:
``SET NX`` then ``SET`` or ``GET``, on redis.asyncio under ASGI), our middleware inside
Django (``IdempotencyMiddleware`` with a headers scope), and the same wrapped by
``django_idempotency.edge``. Ratios are taken within a round against that round's
floor, then the median over the rounds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.append(str(ROOT))

from benchmarks import load  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    code_paths,
    cpu_seconds,
    env_for,
    log,
    mark,
    med,
    servers,
)
from django_idempotency.edge import headers_scope  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS, SECONDS = (1, 1.0) if QUICK else (5, 3.0)
CONNECTIONS = 8
BODY = b'{"amount": 100, "currency": "EUR", "customer": "cus_123"}'

#: ``(label, harness kind, server arguments, URL, floor stack)``.
SERVERS = (
    ("uvicorn, async view", "asgi", ("--workers", "1"), "/aplain/", "afloor"),
    ("gunicorn sync", "wsgi", ("-w", "1", "-k", "sync"), "/plain/", "floor"),
)
#: ``(row, stack, BENCH_EDGE)``.
ROWS = (
    ("floor (raw Redis)", "floor", "0"),
    ("in Django (middleware)", "edge", "0"),
    ("edge", "edge", "1"),
)
#: Edge replay throughput wanted, as a multiple of the floor's replay.
TARGETS = {"asgi": 4.5, "wsgi": 2.0}


@headers_scope
def anonymous_scope(headers: Mapping[str, str]) -> str:
    """Every request in one scope: what the default scope gives without authentication."""
    return "anonymous"


def main() -> None:
    redis_url = os.environ["REDIS_URL"]
    code = code_paths([])[0]
    generator = load.generator_name(os.environ.get("BENCH_GENERATOR", "auto"))
    specs = {}
    for _, kind, args, _, floor in SERVERS:
        for row, stack, edge in ROWS:
            env = env_for(code, redis_url, floor if stack == "floor" else stack, BENCH_EDGE=edge)
            specs[f"{kind}/{row}"] = (code, env, kind, args)
    results: dict[tuple[str, str, str], list[load.Load]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    with servers(specs) as running:
        for name, server in running.items():
            kind = name.partition("/")[0]
            url = next(s[3] for s in SERVERS if s[1] == kind)
            load.drive(generator, server.port, url, BODY, load.SAME, 0.5, 2)
        for r in range(ROUNDS):
            for path_kind, keys in (("first-time", load.FRESH), ("replay", load.SAME)):
                for _, kind, _, url, _ in SERVERS:
                    shift = r % len(ROWS)
                    for row, _, _ in ROWS[shift:] + ROWS[:shift]:
                        server = running[f"{kind}/{row}"]
                        workers = server.workers()
                        before = cpu_seconds(workers)
                        got = load.drive(
                            generator, server.port, url, BODY, keys, SECONDS, CONNECTIONS
                        )
                        used = (cpu_seconds(workers) - before) / max(got.requests, 1) * 1e6
                        results.setdefault((kind, path_kind, row), []).append(got)
                        cpu.setdefault((kind, path_kind, row), []).append(used)
                        log(
                            f"edge: round {r + 1}/{ROUNDS} {kind} {path_kind:10} {row:24} "
                            f"{got.rps:7.0f} req/s p50 {got.p50_ms:6.2f} ms"
                            + (f"  ERRORS {got.errors}" if got.errors else "")
                        )
    print(report(results, cpu, generator))


def ratio(results: dict[tuple[str, str, str], list[load.Load]], key: tuple[str, str, str]) -> float:
    """Median over the rounds of this row's req/s over the same round's floor."""
    kind, path_kind, _ = key
    floors = results[(kind, path_kind, ROWS[0][0])]
    return med([a.rps / b.rps for a, b in zip(results[key], floors, strict=True) if b.rps])


def report(
    results: dict[tuple[str, str, str], list[load.Load]],
    cpu: dict[tuple[str, str, str], list[float]],
    generator: str,
) -> str:
    lines = [
        "## Edge replays",
        "",
        f"{ROUNDS} interleaved rounds of {SECONDS:g} s per phase, {CONNECTIONS} connections, "
        f"1 worker, load generator: {generator}.",
        "",
        "The load generator shares the machine with the servers and Redis: where it is the "
        "bottleneck, req/s ratios understate the difference, and the worker's CPU time per "
        "request (from /proc) shows it.",
        "",
        "| server | path | stack | req/s | x floor | worker CPU µs/req | x floor by CPU "
        "| p50 ms | p99 ms | errors |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for label, kind, _, _, _ in SERVERS:
        for path_kind in ("first-time", "replay"):
            for row, _, _ in ROWS:
                got = results[(kind, path_kind, row)]
                used = med(cpu[(kind, path_kind, row)])
                floor_cpu = med(cpu[(kind, path_kind, ROWS[0][0])])
                lines.append(
                    f"| {label} | {path_kind} | {row} | {med([x.rps for x in got]):.0f} "
                    f"| {ratio(results, (kind, path_kind, row)):.2f} "
                    f"| {used:.0f} | {floor_cpu / used if used else float('nan'):.2f} "
                    f"| {med([x.p50_ms for x in got]):.2f} | {med([x.p99_ms for x in got]):.2f} "
                    f"| {sum(x.errors for x in got)} |"
                )
    lines.append("")
    for label, kind, _, _, _ in SERVERS:
        edge = ratio(results, (kind, "replay", "edge"))
        inside = ratio(results, (kind, "replay", ROWS[1][0]))
        first = [
            a.rps / b.rps
            for a, b in zip(
                results[(kind, "first-time", "edge")],
                results[(kind, "first-time", ROWS[1][0])],
                strict=True,
            )
            if b.rps
        ]
        lines.append(
            f"  - {label}: edge replay {edge:.2f} x floor (target >= {TARGETS[kind]:g}: "
            f"{mark(edge >= TARGETS[kind])}; in Django {inside:.2f} x floor); first-time "
            f"through the edge {med(first):.2f} x first-time in Django"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
