"""Edge replays against the in-Django replay and the raw-Redis floor, in one run.

``benchmarks/run.py`` (``make bench``) runs it and prints its section; alone::

    REDIS_URL=redis://127.0.0.1:6379/0 python benchmarks/edge.py

Three servers, each with one worker and 8 connections in flight: uvicorn serving an async
view, gunicorn's sync worker (a connection per request) and its gthread worker (8
threads, keep-alive) serving a sync one. On each, four stacks of the same project are
measured interleaved, first-time (a fresh key per request) and replay (one key): the
floor (a middleware doing only the Redis work any idempotency layer must do: ``SET NX``
then ``SET`` or ``GET``, on redis.asyncio under ASGI), the server alone answering at
once (:mod:`benchmarks.ceiling`: no edge can beat it on that server), our middleware
inside Django (``IdempotencyMiddleware`` with a headers scope), and the same wrapped by
``django_idempotency.edge``. Ratios are taken within a round against that round's
floor, then the median over the rounds.

``--variant NAME=PATH`` adds the two stacks of another checkout's ``django_idempotency``
(a ``git worktree`` of the current head, say) to every round, as rows marked
``[NAME]``, against the same floor: a same-run A/B::

    REDIS_URL=... python benchmarks/edge.py --variant base=/tmp/base
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.append(str(ROOT))

from benchmarks import load  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    Code,
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

#: ``(label, name, harness kind, server arguments, URL, floor stack)``.
SERVERS = (
    ("uvicorn, async view", "asgi", "asgi", ("--workers", "1"), "/aplain/", "afloor"),
    ("gunicorn sync", "wsgi", "wsgi", ("-w", "1", "-k", "sync"), "/plain/", "floor"),
    (
        "gunicorn gthread, keep-alive",
        "gthread",
        "wsgi",
        ("-w", "1", "-k", "gthread", "--threads", str(CONNECTIONS)),
        "/plain/",
        "floor",
    ),
)
#: ``(row, stack, BENCH_EDGE)``: the floor, the ceiling (:mod:`benchmarks.ceiling`), then
#: the rows each checkout gets.
ROWS = (
    ("floor (raw Redis)", "floor", "0"),
    ("server alone (ceiling)", "edge", "ceiling"),
    ("in Django (middleware)", "edge", "0"),
    ("edge", "edge", "1"),
)
SHARED = 2
#: Edge replay throughput wanted, as a multiple of the floor's replay.
TARGETS = {"asgi": 4.5, "wsgi": 2.0, "gthread": 2.0}


@headers_scope
def anonymous_scope(headers: Mapping[str, str]) -> str:
    """Every request in one scope: what the default scope gives without authentication."""
    return "anonymous"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args()
    redis_url = os.environ["REDIS_URL"]
    codes = code_paths(args.variant)
    generator = load.generator_name(os.environ.get("BENCH_GENERATOR", "auto"))
    # The floor and the ceiling are the same for every checkout: measured once.
    rows = [(row[0], codes[0], row) for row in ROWS[:SHARED]] + [
        (row[0] + code.suffix, code, row) for code in codes for row in ROWS[SHARED:]
    ]
    specs = {}
    for _, name, kind, server_args, _, floor in SERVERS:
        for label, code, (_, stack, edge) in rows:
            stack = floor if stack == "floor" else stack
            env = env_for(code, redis_url, stack, BENCH_EDGE=edge)
            specs[f"{name}/{label}"] = (code, env, kind, server_args)
    results: dict[tuple[str, str, str], list[load.Load]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    with servers(specs) as running:
        for key, server in running.items():
            name = key.partition("/")[0]
            url = next(s[4] for s in SERVERS if s[1] == name)
            load.drive(generator, server.port, url, BODY, load.SAME, 0.5, 2)
        for r in range(ROUNDS):
            for path_kind, keys in (("first-time", load.FRESH), ("replay", load.SAME)):
                for _, name, _, _, url, _ in SERVERS:
                    shift = r % len(rows)
                    for label, _, _ in rows[shift:] + rows[:shift]:
                        server = running[f"{name}/{label}"]
                        workers = server.workers()
                        before = cpu_seconds(workers)
                        got = load.drive(
                            generator, server.port, url, BODY, keys, SECONDS, CONNECTIONS
                        )
                        used = (cpu_seconds(workers) - before) / max(got.requests, 1) * 1e6
                        results.setdefault((name, path_kind, label), []).append(got)
                        cpu.setdefault((name, path_kind, label), []).append(used)
                        log(
                            f"edge: round {r + 1}/{ROUNDS} {name} {path_kind:10} {label:24} "
                            f"{got.rps:7.0f} req/s p50 {got.p50_ms:6.2f} ms"
                            + (f"  ERRORS {got.errors}" if got.errors else "")
                        )
    print(report(results, cpu, generator, [label for label, _, _ in rows], codes))


def per_round(
    results: dict[tuple[str, str, str], list[load.Load]],
    key: tuple[str, str, str],
    against: str = ROWS[0][0],
) -> list[float]:
    """This row's req/s over row ``against``'s (the floor by default), round by round."""
    name, path_kind, _ = key
    base = results[(name, path_kind, against)]
    return [a.rps / b.rps for a, b in zip(results[key], base, strict=True) if b.rps]


def spread(values: list[float]) -> str:
    """Median and range of per-round ratios: ``1.02 (0.97-1.08)``."""
    return f"{med(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "nan"


def report(
    results: dict[tuple[str, str, str], list[load.Load]],
    cpu: dict[tuple[str, str, str], list[float]],
    generator: str,
    rows: list[str],
    codes: list[Code],
) -> str:
    lines = [
        "## Edge replays",
        "",
        f"{ROUNDS} interleaved rounds of {SECONDS:g} s per phase, {CONNECTIONS} connections, "
        f"1 worker, load generator: {generator}. x floor: the median over the rounds of "
        "req/s over the same round's floor, with the range over the rounds.",
        "",
        "The load generator shares the machine with the servers and Redis: where it is the "
        "bottleneck, req/s ratios understate the difference, and the worker's CPU time per "
        "request (from /proc) shows it.",
        "",
        "| server | path | stack | req/s | x floor (range) | worker CPU µs/req | x floor by CPU "
        "| p50 ms | p99 ms | errors |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for label, name, *_ in SERVERS:
        for path_kind in ("first-time", "replay"):
            floor_cpu = med(cpu[(name, path_kind, ROWS[0][0])])
            for row in rows:
                got = results[(name, path_kind, row)]
                used = med(cpu[(name, path_kind, row)])
                lines.append(
                    f"| {label} | {path_kind} | {row} | {med([x.rps for x in got]):.0f} "
                    f"| {spread(per_round(results, (name, path_kind, row)))} "
                    f"| {used:.0f} | {floor_cpu / used if used else float('nan'):.2f} "
                    f"| {med([x.p50_ms for x in got]):.2f} | {med([x.p99_ms for x in got]):.2f} "
                    f"| {sum(x.errors for x in got)} |"
                )
    lines.append("")
    inside = ROWS[SHARED][0]
    for label, name, *_ in SERVERS:
        edge = med(per_round(results, (name, "replay", "edge")))
        first = per_round(results, (name, "first-time", "edge"), inside)
        ceiling = per_round(results, (name, "replay", ROWS[1][0]))
        lines.append(
            f"  - {label}: edge replay {edge:.2f} x floor (target >= {TARGETS[name]:g}: "
            f"{mark(edge >= TARGETS[name])}; the server alone {spread(ceiling)}; in Django "
            f"{spread(per_round(results, (name, 'replay', inside)))} x floor); first-time "
            f"through the edge {spread(first)} x first-time in Django"
        )
    for path_kind, want in (("first-time", 0.95), ("replay", 1.10)):
        ratios = per_round(results, ("asgi", path_kind, inside))
        lines.append(
            f"  - uvicorn, async view: the middleware {path_kind} {spread(ratios)} x the async "
            f"raw-Redis floor (target >= {want:.2f}: {mark(med(ratios) >= want)})"
        )
    for code in codes[1:]:
        for label, name, *_ in SERVERS:
            for path_kind in ("first-time", "replay"):
                for row, _, _ in ROWS[SHARED:]:
                    ab = per_round(results, (name, path_kind, row), row + code.suffix)
                    ours = cpu[(name, path_kind, row)]
                    theirs = cpu[(name, path_kind, row + code.suffix)]
                    by_cpu = [b / a for a, b in zip(ours, theirs, strict=True) if a]
                    lines.append(
                        f"  - A/B {label}, {path_kind}, {row}: this checkout over "
                        f"[{code.label}], per round: req/s {spread(ab)}, worker CPU "
                        f"(theirs/ours) {spread(by_cpu)}"
                    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
