"""The hot path: HTTP requests per second against the floor, and ``run()`` against its own.

HTTP: gunicorn (1 sync worker per server; one server per stack, all started up front)
serves a small JSON endpoint; ``wrk`` (else a Python generator) drives it. Phases: (a)
bare, (b) floor, (c) our middleware, (d) our DRF mixin, each on the first-time path (a
fresh key per request) and the replay path (one key); (d) is compared with the same
DRF view bare (a') and behind the floor (b'). The phases are interleaved, ``--rounds``
times; ratios are taken within a round, then the median of those. Redis cost per
request: ``INFO commandstats`` over each timed phase (EVALSHA counted once, plus the
commands Lua ran inside it), and round trips counted exactly by a MONITOR audit of 20
requests.

``run()``: one subprocess per round (``benchmarks.api_bench``) measures ``run()`` and the
raw redis-py floor interleaved, first-time and replay.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks import load
from benchmarks.harness import (
    Code,
    check_code,
    cpu_seconds,
    env_for,
    log,
    mark,
    med,
    redis_cpu_seconds,
    servers,
)
from benchmarks.probe import Monitor, commandstats, per, reset
from django_idempotency.testing import RedisServer

BODY = b'{"amount": 100, "currency": "EUR", "customer": "cus_123"}'
AUDIT_REQUESTS = 20


@dataclass(frozen=True)
class Phase:
    """One timed HTTP measurement."""

    row: str  # e.g. "(c) middleware"
    path_kind: str  # "first-time" or "replay"
    stack: str
    code: Code
    url: str
    keys: str
    bare: str | None  # the row used as "bare" for ratios
    floor: str | None  # the row used as "floor" for ratios

    @property
    def name(self) -> str:
        return f"{self.path_kind}/{self.row}{self.code.suffix}"


@dataclass
class Measured:
    loads: list[load.Load] = field(default_factory=list)
    worker_cpu_us: list[float] = field(default_factory=list)
    redis_cpu_us: list[float] = field(default_factory=list)
    stats: list[Counter[str]] = field(default_factory=list)
    audit_top: Counter[str] = field(default_factory=Counter)
    audit_inner: Counter[str] = field(default_factory=Counter)


def http_phases(codes: list[Code]) -> list[Phase]:
    base = codes[0]
    out: list[Phase] = []
    for path_kind, keys in (("first-time", load.FRESH), ("replay", load.SAME)):
        if path_kind == "first-time":
            out.append(Phase("(a) bare", path_kind, "bare", base, "/plain/", keys, None, None))
        out.append(Phase("(b) floor", path_kind, "floor", base, "/plain/", keys, "(a) bare", None))
        for code in codes:
            out.append(
                Phase(
                    "(c) middleware",
                    path_kind,
                    "middleware",
                    code,
                    "/plain/",
                    keys,
                    "(a) bare",
                    "(b) floor",
                )
            )
        if path_kind == "first-time":
            out.append(Phase("(a') bare DRF", path_kind, "bare", base, "/drf/", keys, None, None))
        out.append(
            Phase("(b') floor DRF", path_kind, "floor", base, "/drf/", keys, "(a') bare DRF", None)
        )
        for code in codes:
            out.append(
                Phase(
                    "(d) DRF mixin",
                    path_kind,
                    "mixin",
                    code,
                    "/drf-mixin/",
                    keys,
                    "(a') bare DRF",
                    "(b') floor DRF",
                )
            )
    return out


def server_key(phase: Phase) -> str:
    return f"{phase.stack}{phase.code.suffix}"


def audit(redis: RedisServer, port: int, phase: Phase) -> tuple[Counter[str], Counter[str]]:
    """Round trips per request, exactly: MONITOR over AUDIT_REQUESTS sequential requests."""
    prefix = uuid.uuid4().hex[:12]
    if phase.keys == load.SAME:
        load.exchange(port, load.request_bytes(phase.url, BODY, f"{prefix}-same"))
    with Monitor(redis.host, redis.port) as monitor:
        for i in range(AUDIT_REQUESTS):
            key = f"{prefix}-same" if phase.keys == load.SAME else f"{prefix}-{i}"
            load.exchange(port, load.request_bytes(phase.url, BODY, key))
    return monitor.top, monitor.inner


def measure_http(
    args: argparse.Namespace, redis: RedisServer, codes: list[Code], generator: str
) -> dict[str, tuple[Phase, Measured]]:
    phases = http_phases(codes)
    sync = ("-w", "1", "-k", "sync")
    specs = {}
    for phase in phases:
        specs[server_key(phase)] = (
            phase.code,
            env_for(phase.code, redis.url, phase.stack),
            "wsgi",
            sync,
        )
    client = redis.client()
    results = {phase.name: (phase, Measured()) for phase in phases}
    with servers(specs) as running:
        ports = {name: server.port for name, server in running.items()}
        pids = {name: server.workers() for name, server in running.items()}
        log(f"{len(ports)} gunicorn servers up; warming up")
        for phase in phases:
            load.drive(generator, ports[server_key(phase)], phase.url, BODY, phase.keys, 1, 2)
        for r in range(args.rounds):
            # Rotate the order so no phase always follows the same neighbour.
            shift = r * len(phases) // max(args.rounds, 1)
            for phase in phases[shift:] + phases[:shift]:
                reset(client)
                worker = pids[server_key(phase)]
                cpu0, redis_cpu0 = cpu_seconds(worker), redis_cpu_seconds(client)
                got = load.drive(
                    generator,
                    ports[server_key(phase)],
                    phase.url,
                    BODY,
                    phase.keys,
                    args.duration,
                    args.connections,
                )
                cpu1, redis_cpu1 = cpu_seconds(worker), redis_cpu_seconds(client)
                measured = results[phase.name][1]
                measured.loads.append(got)
                measured.worker_cpu_us.append((cpu1 - cpu0) / max(got.requests, 1) * 1e6)
                measured.redis_cpu_us.append((redis_cpu1 - redis_cpu0) / max(got.requests, 1) * 1e6)
                measured.stats.append(commandstats(client))
                log(
                    f"round {r + 1}/{args.rounds} {phase.name:40} {got.rps:8.0f} req/s  "
                    f"p50 {got.p50_ms:6.2f} ms  p99 {got.p99_ms:6.2f} ms  "
                    f"CPU {measured.worker_cpu_us[-1]:5.0f} µs/req"
                    + (f"  ERRORS {got.errors}" if got.errors else "")
                )
        for phase in phases:
            top, inner = audit(redis, ports[server_key(phase)], phase)
            results[phase.name][1].audit_top.update(top)
            results[phase.name][1].audit_inner.update(inner)
    return results


def measure_run_api(
    args: argparse.Namespace, redis: RedisServer, codes: list[Code]
) -> dict[str, list[dict[str, Any]]]:
    """One subprocess per code and round; each measures ours and the floor interleaved."""
    results: dict[str, list[dict[str, Any]]] = {code.label: [] for code in codes}
    for r in range(args.api_rounds):
        for code in codes:
            out = json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.api_bench",
                        "--seconds",
                        str(args.api_duration),
                        "--order",
                        str(r),
                    ],
                    env=env_for(code, redis.url, "bare"),
                    cwd=code.home,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            check_code(code, out.pop("code"))
            results[code.label].append(out)
            rates = "  ".join(
                f"{name} {value['calls'] / value['seconds']:6.0f}/s {value['cpu_us']:4.0f} µs CPU"
                for name, value in out.items()
            )
            log(f"round {r + 1}/{args.api_rounds} run(){code.suffix}: {rates}")
    return results


def ratio(results: dict[str, tuple[Phase, Measured]], phase: Phase, ref: str | None) -> str:
    if ref is None:
        return ""
    ref_phase = next(
        (p for p, _ in results.values() if p.row == ref and p.path_kind == phase.path_kind), None
    )
    if ref_phase is None:  # bare rows are measured once, on the first-time path
        ref_phase = next(p for p, _ in results.values() if p.row == ref)
    mine = results[phase.name][1].loads
    theirs = results[ref_phase.name][1].loads
    per_round = [a.rps / b.rps for a, b in zip(mine, theirs, strict=True) if b.rps]
    return f"{med(per_round):.2f}"


def http_table(results: dict[str, tuple[Phase, Measured]]) -> list[str]:
    lines = [
        "| path | variant | req/s | x bare | x floor | p50 ms | p99 ms | round trips/req "
        "| Redis cmds/req (commandstats) | worker CPU µs/req | Redis CPU µs/req |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for phase, m in results.values():
        requests = sum(x.requests for x in m.loads)
        stats: Counter[str] = sum(m.stats, Counter())
        trips = sum(m.audit_top.values()) / AUDIT_REQUESTS
        errors = sum(x.errors for x in m.loads)
        lines.append(
            f"| {phase.path_kind} | {phase.row}{phase.code.suffix} "
            f"| {med([x.rps for x in m.loads]):.0f}{f' ({errors} errors)' if errors else ''} "
            f"| {ratio(results, phase, phase.bare)} | {ratio(results, phase, phase.floor)} "
            f"| {med([x.p50_ms for x in m.loads]):.2f} | {med([x.p99_ms for x in m.loads]):.2f} "
            f"| {trips:.2f} | {sum(stats.values()) / requests:.2f} "
            f"| {med(m.worker_cpu_us):.0f} | {med(m.redis_cpu_us):.1f} |"
        )
    return lines


def breakdown_lines(results: dict[str, tuple[Phase, Measured]]) -> list[str]:
    lines = []
    for phase, m in results.values():
        requests = sum(x.requests for x in m.loads)
        stats: Counter[str] = sum(m.stats, Counter())
        if not stats:
            continue
        lines.append(
            f"- {phase.name}: sent {per(m.audit_top, AUDIT_REQUESTS)}; "
            f"inside Lua {per(m.audit_inner, AUDIT_REQUESTS)}; "
            f"commandstats {per(stats, requests)}"
        )
    return lines


def run_table(results: dict[str, list[dict[str, Any]]], codes: list[Code]) -> list[str]:
    lines = [
        "| path | variant | calls/s | x floor | p50 ms | p99 ms | round trips/call "
        "| Redis cmds/call (commandstats) | CPU µs/call |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for kind, label in (("first", "first-time"), ("replay", "replay")):
        rows = [("floor", codes[0])] + [("ours", code) for code in codes]
        for who, code in rows:
            rounds = [out[f"{who}-{kind}"] for out in results.get(code.label, [])]
            floors = [out[f"floor-{kind}"] for out in results.get(code.label, [])]
            if not rounds:
                continue
            rates = [x["calls"] / x["seconds"] for x in rounds]
            ratios = [a / (f["calls"] / f["seconds"]) for a, f in zip(rates, floors, strict=True)]
            calls = sum(x["calls"] for x in rounds)
            cmds = sum(sum(x["commandstats"].values()) for x in rounds)
            lines.append(
                f"| {label} | {'floor (raw redis-py)' if who == 'floor' else 'run()'}"
                f"{code.suffix if who == 'ours' else ''} "
                f"| {med(rates):.0f} | {med(ratios):.2f} "
                f"| {med([x['p50_ms'] for x in rounds]):.3f} "
                f"| {med([x['p99_ms'] for x in rounds]):.3f} "
                f"| {med([x['round_trips'] for x in rounds]):.2f} | {cmds / calls:.2f} "
                f"| {med([x['cpu_us'] for x in rounds]):.0f} |"
            )
    return lines


def targets(
    http: dict[str, tuple[Phase, Measured]],
    api: dict[str, list[dict[str, Any]]],
    code: Code,
    codes: list[Code],
) -> list[str]:
    """The hot-path targets for ``code``, each with its measured value and MET / MISSED."""

    def find(path_kind: str, row: str, of: Code) -> tuple[Phase, Measured] | None:
        for phase, measured in http.values():
            if phase.path_kind == path_kind and phase.row == row and phase.code == of:
                return phase, measured
        return None

    lines = []
    for path_kind, want, trips in (("first-time", 0.95, 2), ("replay", 1.10, 1)):
        for door in ("(c) middleware", "(d) DRF mixin"):
            got = find(path_kind, door, code)
            if got is None:
                continue
            phase, m = got
            ref = find(path_kind, str(phase.floor), codes[0])
            if ref is None or not m.loads:
                continue
            value = float(ratio(http, phase, phase.floor))
            cpu = med(ref[1].worker_cpu_us) / med(m.worker_cpu_us)
            measured_trips = sum(m.audit_top.values()) / AUDIT_REQUESTS
            lines.append(
                f"  - {path_kind} {door} vs {phase.floor}: {value:.2f} x floor throughput "
                f"(target >= {want:.2f}: {mark(value >= want)}; by worker CPU per "
                f"request {cpu:.2f}); {measured_trips:g} round trips per request "
                f"(target {trips}: {mark(measured_trips == trips)})"
            )
    rounds = api.get(code.label, [])
    run_targets: tuple[tuple[str, str, float | None], ...] = (
        ("first", "first-time", 0.95),
        ("replay", "replay", None),
    )
    for kind, label, run_want in run_targets:
        ratios = [
            (x[f"ours-{kind}"]["calls"] / x[f"ours-{kind}"]["seconds"])
            / (x[f"floor-{kind}"]["calls"] / x[f"floor-{kind}"]["seconds"])
            for x in rounds
        ]
        if not ratios:
            continue
        run_trips = med([x[f"ours-{kind}"]["round_trips"] for x in rounds])
        verdict = (
            f" (target >= {run_want:.2f}: {mark(med(ratios) >= run_want)})" if run_want else ""
        )
        lines.append(
            f"  - {label} run() vs raw redis-py: {med(ratios):.2f} x floor calls/s{verdict}; "
            f"{run_trips:g} round trips per call"
        )
    return lines
