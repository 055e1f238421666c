"""Duplicate storms: many concurrent duplicates of ONE key, per door, measured per waiter.

Doors (``DOORS``): gunicorn gthread (1 worker x 1000 threads, and 4 x 256), uvicorn
(1 worker, and 2 workers) with an async view behind the middleware, ``run()`` with
threads and ``arun()`` with asyncio tasks (one process, and two). The owner's action
sleeps ``--storm-sleep-ms``, so every duplicate arrives while it runs.

What is measured, for each duplicate (see :mod:`benchmarks.clock` and
:mod:`benchmarks.counting`, which run inside the server or the ``run()`` process):

* its outcome (``waited``: it waited and replayed; ``replayed``: it came after the owner
  finished), the process that served it, and the Redis commands it sent itself;
* the waiter delay after completion: when its answer reached the client (HTTP) or its
  call returned (``run()``), and when the server decided to replay it, minus when the
  owner's final record was stored (the end of the owner's store operation);
* during the audit storms (100, then 1000 duplicates, MONITOR on), every command Redis
  executed per process, and the connections each process held (``CLIENT LIST`` sampled
  every 10 ms; connections are named ``bench-<pid>``).

A waiter served by the owner's process is *locally coalesced* (it follows the owner in
memory: 0 commands expected); one in another process follows that process's own first
duplicate, which claims and, once notified, reads the record (2 commands expected for
that one, 0 for the rest).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from benchmarks import load
from benchmarks.counting import HOUSEKEEPING
from benchmarks.harness import Code, cpu_seconds, env_for, log, mark, servers
from benchmarks.probe import ClientList, Monitor
from django_idempotency.testing import RedisServer

BODY = b'{"amount": 100, "currency": "EUR", "customer": "cus_123"}'
AUDIT_SIZES = (100,)  # plus the storm size itself


@dataclass(frozen=True)
class Door:
    """One way in, with its process layout."""

    name: str
    kind: str  # "wsgi", "asgi", "run", "arun"
    processes: int
    #: Threads per gunicorn worker (wsgi); unused otherwise.
    threads: int
    target_ms: float
    #: A floor: the same server and storm without idempotency (``benchmarks.urls.gate``).
    floor: bool = False
    #: The p99 delay's target as a multiple of the door's floor (``None``: none set).
    floor_factor: float | None = None

    def server_args(self) -> tuple[str, ...]:
        if self.kind == "wsgi":
            return (
                "-k",
                "gthread",
                "-w",
                str(self.processes),
                "--threads",
                str(self.threads),
                "--worker-connections",
                str(max(2 * self.threads, 2000)),
            )
        return ("--workers", str(self.processes)) if self.processes > 1 else ()

    @property
    def http(self) -> bool:
        return self.kind in ("wsgi", "asgi")

    @property
    def path(self) -> str:
        if self.floor:
            return "/gate/" if self.kind == "wsgi" else "/agate/"
        return "/slow/" if self.kind == "wsgi" else "/aslow/"

    @property
    def stack(self) -> str:
        return "bare" if self.floor else "storm"


def doors(n: int) -> list[Door]:
    """The storm doors for ``n`` duplicates."""
    return [
        Door(f"floor: WSGI gthread 1 x {n} threads, one threading.Event", "wsgi", 1, n, 20, True),
        Door("floor: ASGI uvicorn, 1 worker, one asyncio.Event", "asgi", 1, 0, 10, True),
        Door(f"WSGI gthread 1 x {n} threads", "wsgi", 1, n, 20),
        Door("WSGI gthread 4 x 256 threads", "wsgi", 4, max(256, -(-n // 4)), 20),
        Door("ASGI uvicorn, 1 worker", "asgi", 1, 0, 10),
        Door("ASGI uvicorn, 2 workers", "asgi", 2, 0, 10),
        Door(f"run(), {n} threads, 1 process", "run", 1, 0, 10),
        Door(f"run(), 2 processes x {n // 2} threads", "run", 2, 0, 10),
        Door(f"arun(), {n} tasks, 1 process", "arun", 1, 0, 10, floor_factor=2),
        Door(f"arun(), 2 processes x {n // 2} tasks", "arun", 2, 0, 10),
    ]


@dataclass(frozen=True)
class Seen:
    """One duplicate of a storm."""

    pid: int
    outcome: str
    status: int
    #: Owner: when its record was stored. Waiter: when it decided to replay.
    at: float | None
    #: When its answer reached the client, or its call returned.
    done: float
    commands: int
    body: bytes = b""


@dataclass
class Storm:
    """One storm's duplicates, and what MONITOR / CLIENT LIST saw during it (audits)."""

    n: int
    seen: list[Seen]
    per_process: dict[str, Counter[str]] = field(default_factory=dict)
    unattributed: Counter[str] = field(default_factory=Counter)
    peak_connections: dict[str, int] = field(default_factory=dict)
    #: CPU seconds the server's processes spent on the storm (HTTP, timed storms).
    server_cpu: float | None = None

    @property
    def owners(self) -> list[Seen]:
        return [s for s in self.seen if s.outcome == "executed"]

    @property
    def owner(self) -> Seen | None:
        owners = self.owners
        return owners[0] if len(owners) == 1 and owners[0].at is not None else None

    def waiters(self, local: bool | None = None) -> list[Seen]:
        owner = self.owner
        out = [s for s in self.seen if s.outcome == "waited"]
        if owner is None or local is None:
            return out
        return [s for s in out if (s.pid == owner.pid) == local]

    def problems(self) -> list[str]:
        """What went wrong in this storm (each a line), or nothing."""
        out = []
        statuses = Counter(s.status for s in self.seen)
        if any(not 200 <= status < 300 for status in statuses):
            out.append(f"statuses {dict(statuses)}")
        outcomes = Counter(s.outcome for s in self.seen)
        if set(outcomes) - {"executed", "waited", "replayed"}:
            out.append(f"outcomes {dict(outcomes)}")
        if len(self.owners) != 1:
            out.append(f"{len(self.owners)} executions")
        if len({s.body for s in self.seen if s.body}) > 1:
            out.append(f"{len({s.body for s in self.seen})} different bodies")
        if len(self.seen) != self.n:
            out.append(f"{len(self.seen)} answers for {self.n} duplicates")
        return out


def _http_seen(replies: Iterable[load.Reply]) -> list[Seen]:
    out = []
    for r in replies:
        h = r.headers
        out.append(
            Seen(
                pid=int(h.get("x-bench-pid", "0") or 0),
                outcome=h.get("x-bench-outcome", "") or f"HTTP {r.status}",
                status=r.status,
                at=float(h["x-bench-at"]) if h.get("x-bench-at") else None,
                done=r.received,
                commands=int(h.get("x-bench-commands", "0") or 0),
                body=r.body,
            )
        )
    return out


def _call_seen(outputs: Iterable[dict[str, Any]]) -> list[Seen]:
    out = []
    for output in outputs:
        for c in output["callers"]:
            out.append(
                Seen(
                    pid=output["pid"],
                    outcome=c["outcome"] or "?",
                    status=200 if c["ok"] else 0,
                    at=c["at"],
                    done=c["done"],
                    commands=c["commands"],
                )
            )
    return out


class _Calls:
    """The ``run()``/``arun()`` processes of one storm, started and held until ``go``."""

    def __init__(self, code: Code, redis_url: str, door: Door, n: int, sleep_ms: int) -> None:
        key = f"storm-{uuid.uuid4().hex}"
        share = [n // door.processes + (i < n % door.processes) for i in range(door.processes)]
        env = env_for(code, redis_url, "bare", BENCH_NAME_CONNECTIONS="1")
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.api_bench",
                    "--storm",
                    str(count),
                    "--sleep-ms",
                    str(sleep_ms),
                    "--key",
                    key,
                    *(["--async"] if door.kind == "arun" else []),
                ],
                env=env,
                cwd=code.home,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for count in share
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"storm process did not start: {line!r}")

    def go(self) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = []
        for proc in self.procs:
            assert proc.stdout is not None
            outputs.append(json.loads(proc.stdout.read()))
            if proc.wait(60) != 0:
                raise SystemExit(f"storm process exited with {proc.returncode}")
        return outputs


def _audited(redis: RedisServer, storm: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``storm()`` under MONITOR and CLIENT LIST sampling."""
    sampler = redis.client(client_name="harness")
    with ClientList(sampler) as clients, Monitor(redis.host, redis.port) as monitor:
        got = storm()
    sampler.close()
    return got, {
        "per_process": clients.per_process(monitor),
        "unattributed": clients.unattributed(monitor),
        "peak_connections": dict(clients.peak),
    }


def measure_door(
    door: Door, redis: RedisServer, code: Code, n: int, sleep_ms: int, repeats: int
) -> tuple[list[Storm], list[Storm]]:
    """Audit storms (100, then ``n`` duplicates) and ``repeats`` timed storms of ``n``."""
    audits: list[Storm] = []
    timed: list[Storm] = []
    # A floor sends nothing to Redis: no audit, only the timed storms.
    sizes = [] if door.floor else [size for size in AUDIT_SIZES if size < n] + [n]
    if door.http:
        spec = {
            door.name: (code, env_for(code, redis.url, door.stack), door.kind, door.server_args())
        }
        with servers(spec) as running:
            port = running[door.name].port
            url = f"{door.path}?ms={sleep_ms}"
            for _ in range(2):  # connections opened, scripts loaded: not measured
                load.storm(port, url, BODY, f"warm-{uuid.uuid4().hex}", 8 * door.processes)
            for size in sizes:
                replies, seen = _audited(
                    redis, lambda s=size: load.storm(port, url, BODY, f"a-{uuid.uuid4().hex}", s)
                )
                audits.append(Storm(size, _http_seen(replies), **seen))
            pids = running[door.name].workers()
            for _ in range(repeats):
                cpu = cpu_seconds(pids)
                replies = load.storm(port, url, BODY, f"t-{uuid.uuid4().hex}", n)
                # Answers are in: the server's work for this storm is done.
                timed.append(Storm(n, _http_seen(replies), server_cpu=cpu_seconds(pids) - cpu))
    else:
        for size in sizes:
            calls = _Calls(code, redis.url, door, size, sleep_ms)
            outputs, seen = _audited(redis, calls.go)
            audits.append(Storm(size, _call_seen(outputs), **seen))
        for _ in range(repeats):
            calls = _Calls(code, redis.url, door, n, sleep_ms)
            timed.append(Storm(n, _call_seen(calls.go())))
    for storm in audits + timed:
        outcomes = Counter(f"{s.outcome} {s.status}" for s in storm.seen)
        log(f"  {storm.n} duplicates: {dict(outcomes)}")
        for problem in storm.problems():
            log(f"storm {door.name}, {storm.n} duplicates: {problem}")
    return audits, timed


# -- summary ------------------------------------------------------------------------------


def percentile_ms(values: list[float], pct: float) -> float | None:
    return load.percentile(sorted(values), pct) * 1000 if values else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _work(commands: Counter[str]) -> int:
    return sum(n for name, n in commands.items() if name not in HOUSEKEEPING)


@dataclass
class Row:
    """A door's summary."""

    door: Door
    n: int
    storms: int
    waiters: float
    late: float
    local: int
    remote: int
    client_p50: float | None
    client_p99: float | None
    server_p50: float | None
    server_p99: float | None
    local_mean: float | None
    local_max: int | None
    remote_mean: float | None
    remote_max: int | None
    per_leader: float | None
    monitor_per_waiter: float | None
    connections: dict[int, int]
    problems: list[str]
    breakdown: str
    cpu_us: float | None

    @property
    def p99(self) -> float | None:
        return self.client_p99


def summarize(door: Door, n: int, audits: list[Storm], timed: list[Storm]) -> Row:
    everything = audits + timed
    full = [s for s in everything if s.n == n]
    client: list[float] = []
    server: list[float] = []
    for storm in timed or full:
        owner = storm.owner
        if owner is None or owner.at is None:
            continue
        for w in storm.waiters():
            client.append(w.done - owner.at)
            if w.at is not None:
                server.append(w.at - owner.at)
    local = [w.commands for s in full for w in s.waiters(local=True)]
    remote = [w.commands for s in full for w in s.waiters(local=False)]
    leaders = []
    for s in full:
        owner = s.owner
        others = {w.pid for w in s.waiters(local=False)}
        if owner is not None and others:
            leaders.append(sum(w.commands for w in s.waiters(local=False)) / len(others))
    # MONITOR, all processes: everything sent minus the owner's own commands, per waiter.
    monitor_per_waiter = None
    audit = next((s for s in reversed(audits) if s.n == n and s.owner is not None), None)
    breakdown = ""
    if audit is not None and audit.owner is not None:
        total = sum(_work(c) for c in audit.per_process.values())
        late = [s for s in audit.seen if s.outcome == "replayed"]
        waiters = audit.waiters()
        if waiters:
            monitor_per_waiter = (
                total - audit.owner.commands - sum(s.commands for s in late)
            ) / len(waiters)
        owner_name = f"bench-{audit.owner.pid}"
        parts = []
        for name, commands in sorted(audit.per_process.items()):
            who = "owner's process" if name == owner_name else "other process"
            parts.append(f"{who} {name}: {dict(commands)}")
        if audit.unattributed:
            parts.append(f"unattributed: {dict(audit.unattributed)}")
        breakdown = "; ".join(parts)
    connections = {}
    for storm in audits:
        if storm.peak_connections:
            connections[storm.n] = max(storm.peak_connections.values())
    problems = sorted({p for s in everything for p in s.problems()})
    late_counts = [sum(1 for x in s.seen if x.outcome == "replayed") for s in full]
    cpu = [s.server_cpu / len(s.seen) * 1e6 for s in timed if s.server_cpu is not None and s.seen]
    return Row(
        door=door,
        n=n,
        storms=len(full),
        waiters=sum(len(s.waiters()) for s in full) / max(len(full), 1),
        late=sum(late_counts) / max(len(full), 1),
        local=len(local),
        remote=len(remote),
        client_p50=percentile_ms(client, 50),
        client_p99=percentile_ms(client, 99),
        server_p50=percentile_ms(server, 50),
        server_p99=percentile_ms(server, 99),
        local_mean=sum(local) / len(local) if local else None,
        local_max=max(local) if local else None,
        remote_mean=sum(remote) / len(remote) if remote else None,
        remote_max=max(remote) if remote else None,
        per_leader=sum(leaders) / len(leaders) if leaders else None,
        monitor_per_waiter=monitor_per_waiter,
        connections=connections,
        problems=problems,
        breakdown=breakdown,
        cpu_us=sum(cpu) / len(cpu) if cpu else None,
    )


@dataclass(frozen=True)
class Floor:
    """How long waking ``n`` waiters of one process takes, with nothing else to do."""

    name: str
    p50: float | None
    p99: float | None


def measure_floors(code: Code, n: int, repeats: int) -> dict[str, Floor]:
    """The thread and asyncio wake-up floors for ``n`` waiters (``repeats`` runs each)."""
    out = {}
    for kind, name, extra in (
        ("threads", f"{n} threads on one threading.Event", []),
        ("asyncio", f"{n} tasks on one asyncio.Event", ["--async"]),
    ):
        delays: list[float] = []
        for _ in range(repeats):
            got = json.loads(
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.api_bench", "--wake-floor", str(n), *extra],
                    env=env_for(code, "", "bare"),
                    cwd=code.home,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            delays += got["delays"]
        floor = out[kind] = Floor(name, percentile_ms(delays, 50), percentile_ms(delays, 99))
        log(f"floor {name}: p50 {_fmt(floor.p50)} p99 {_fmt(floor.p99)} ms")
    return out


def floor_for(door: Door, storms: Storms) -> tuple[str, float | None] | None:
    """The floor that bounds ``door``'s delay: the same server without idempotency (HTTP),
    or waking as many threads or tasks on one event (``run()``, ``arun()``)."""
    if door.http:
        for row in storms.rows:
            if row.door.floor and row.door.kind == door.kind:
                return row.door.name.removeprefix("floor: "), row.p99
        return None
    floor = storms.floors.get("asyncio" if door.kind == "arun" else "threads")
    return None if floor is None else (floor.name, floor.p99)


@dataclass
class Storms:
    """Every door's row, and the wake-up floors."""

    rows: list[Row] = field(default_factory=list)
    floors: dict[str, Floor] = field(default_factory=dict)


def measure_storms(
    redis: RedisServer, code: Code, n: int, sleep_ms: int, repeats: int, only: set[str]
) -> Storms:
    rows = []
    floors = measure_floors(code, n, repeats)
    for door in doors(n):
        if only and door.kind not in only:
            continue
        started = time.monotonic()
        audits, timed = measure_door(door, redis, code, n, sleep_ms, repeats)
        row = summarize(door, n, audits, timed)
        rows.append(row)
        log(
            f"storm {door.name}: {row.waiters:.0f} waiters, delay p50 {_fmt(row.client_p50)} "
            f"p99 {_fmt(row.client_p99)} ms; commands per waiter local "
            f"{_fmt(row.local_mean, 2)} remote {_fmt(row.remote_mean, 2)}; connections "
            f"{row.connections} ({time.monotonic() - started:.0f} s)"
        )
    return Storms(rows, floors)


def table(storms: Storms) -> list[str]:
    rows = storms.rows
    if not rows:
        return []
    lines = [
        "| door | waiters (+ late) | delay p50 / p99 ms, client | server-side p50 / p99 ms "
        "| server CPU µs per duplicate | cmds per waiter: coalesced locally, mean / max (n) "
        "| in other processes, mean / max (n) | per other process | all cmds per waiter "
        "(MONITOR) | connections per process, peak, by storm size |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        conns = ", ".join(f"{k}: {v}" for k, v in sorted(r.connections.items()))
        if r.door.floor:
            lines.append(
                f"| {r.door.name}, no idempotency | {r.waiters:.0f} "
                f"| {_fmt(r.client_p50)} / {_fmt(r.client_p99)} "
                f"| {_fmt(r.server_p50)} / {_fmt(r.server_p99)} | {_fmt(r.cpu_us, 0)} | | | | | |"
            )
            continue
        lines.append(
            f"| {r.door.name} | {r.waiters:.0f} (+ {r.late:.0f}) "
            f"| {_fmt(r.client_p50)} / {_fmt(r.client_p99)} "
            f"| {_fmt(r.server_p50)} / {_fmt(r.server_p99)} | {_fmt(r.cpu_us, 0)} "
            f"| {_fmt(r.local_mean, 2)} / {_fmt(r.local_max, 0)} ({r.local}) "
            f"| {_fmt(r.remote_mean, 2)} / {_fmt(r.remote_max, 0)} ({r.remote}) "
            f"| {_fmt(r.per_leader, 2)} | {_fmt(r.monitor_per_waiter, 3)} | {conns} |"
        )
    for floor in storms.floors.values():
        lines.append(
            f"| floor: {floor.name}, no Redis, no library | | {_fmt(floor.p50)} / "
            f"{_fmt(floor.p99)} | | | | | | | |"
        )
    return lines


def details(storms: Storms) -> list[str]:
    lines = []
    for r in storms.rows:
        if r.breakdown:
            lines.append(f"- {r.door.name}, {r.n} duplicates under MONITOR: {r.breakdown}")
        for problem in r.problems:
            lines.append(f"- {r.door.name}: PROBLEM in a storm: {problem}")
    return lines


def targets(storms: Storms) -> list[str]:
    lines = []
    for r in storms.rows:
        if r.door.floor:
            continue
        p99 = r.p99
        floor = floor_for(r.door, storms)
        against = ""
        if floor is not None and floor[1] and p99 is not None:
            against = f"; floor ({floor[0]}) {_fmt(floor[1])} ms, ours {p99 / floor[1]:.2f} x"
            if r.door.floor_factor is not None:
                within = p99 <= r.door.floor_factor * floor[1]
                against += f" (target <= {r.door.floor_factor:g} x: {mark(within)})"
        checks = [
            f"waiter delay p99 {_fmt(p99)} ms (target <= {r.door.target_ms:g}: "
            f"{mark(p99 is not None and p99 <= r.door.target_ms)}{against})"
        ]
        if r.local_max is not None:
            checks.append(
                f"locally coalesced waiters send {_fmt(r.local_max, 0)} commands at most "
                f"(target 0: {mark(r.local_max == 0)})"
            )
        if r.remote_max is not None:
            checks.append(
                f"waiters in other processes send {_fmt(r.remote_max, 0)} at most "
                f"(target <= 2: {mark(r.remote_max <= 2)})"
            )
        if len(r.connections) > 1:
            small, big = min(r.connections), max(r.connections)
            checks.append(
                f"connections per process {r.connections[small]} with {small} duplicates, "
                f"{r.connections[big]} with {big} (target: the same: "
                f"{mark(r.connections[big] <= r.connections[small])})"
            )
        if r.problems:
            checks.append(f"PROBLEMS: {'; '.join(r.problems)}")
        lines.append(f"  - storm {r.door.name}: " + "; ".join(checks))
    return lines
