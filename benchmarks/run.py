"""``make bench``: cost per request against a bare endpoint and the raw-Redis floor.

One run, one machine, one private Redis (``django_idempotency.testing.RedisServer``):

1. HTTP throughput. gunicorn (1 sync worker per server; one server per stack, all
   started up front) serves a small JSON endpoint; ``wrk`` (else a Python generator)
   drives it. Phases: (a) bare, (b) floor, (c) our middleware, (d) our DRF mixin, each
   on the first-time path (a fresh key per request) and the replay path (one key);
   (d) is compared with the same DRF view bare (a') and behind the floor (b').
   The phases are interleaved, ``--rounds`` times, and medians are reported; ratios
   are taken within a round, then the median of those.
2. Redis cost per request: ``INFO commandstats`` over each timed phase (EVALSHA
   counted once, plus the commands Lua ran inside it), and round trips counted
   exactly by a MONITOR audit of 20 requests.
3. Duplicate storm: 100 concurrent duplicates of one key whose view sleeps 200 ms,
   on gunicorn gthread workers; the waiters' delay after the owner stored its
   response, and the Redis commands the waiters issued.
4. ``run()`` without HTTP (subprocess per round), against the floor in raw redis-py;
   and the same storm through ``run()`` with 100 threads.
5. Memory: ``MEMORY USAGE`` of one stored record for a few body sizes.

``--variant NAME=PATH`` measures another checkout's ``django_idempotency`` (e.g. a
``git worktree`` with a patch applied) in the same run, interleaved with this one.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.append(str(ROOT))

from benchmarks import load  # noqa: E402
from benchmarks.probe import Monitor, commandstats, per, reset  # noqa: E402
from django_idempotency.testing import RedisServer  # noqa: E402

BIN = Path(sys.executable).parent
BODY = b'{"amount": 100, "currency": "EUR", "customer": "cus_123"}'
STORM_PATH = "/slow/?ms={ms}"
MEMORY_BODIES = (64, 512, 4096, 65536)
AUDIT_REQUESTS = 20


@dataclass(frozen=True)
class Code:
    """One django_idempotency checkout under test.

    ``home`` holds two symlinks, ``django_idempotency`` (the checkout's) and
    ``benchmarks`` (this one); servers and subprocesses run with it as their working
    directory and only entry on PYTHONPATH, so nothing else can shadow the package.
    """

    label: str
    source: Path
    home: Path

    @property
    def pythonpath(self) -> str:
        return str(self.home)

    @property
    def suffix(self) -> str:
        return "" if self.label == "HEAD" else f" [{self.label}]"


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


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads), from /proc."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def redis_cpu_seconds(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@dataclass
class Measured:
    loads: list[load.Load] = field(default_factory=list)
    worker_cpu_us: list[float] = field(default_factory=list)
    redis_cpu_us: list[float] = field(default_factory=list)
    stats: list[Counter[str]] = field(default_factory=list)
    audit_top: Counter[str] = field(default_factory=Counter)
    audit_inner: Counter[str] = field(default_factory=Counter)


def code_paths(variants: list[str]) -> list[Code]:
    specs = [("HEAD", str(ROOT))] + [tuple(v.partition("=")[::2]) for v in variants]
    codes = []
    for label, path in specs:
        source = Path(path).resolve() / "django_idempotency"
        if not label or not source.is_dir():
            raise SystemExit(f"--variant {label}={path}: PATH/django_idempotency is missing")
        home = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
        atexit.register(shutil.rmtree, home, True)  # symlinks only: the targets stay
        (home / "django_idempotency").symlink_to(source)
        (home / "benchmarks").symlink_to(ROOT / "benchmarks")
        codes.append(Code(label, source, home))
    return codes


def check_code(code: Code, reported: str) -> None:
    """Stop when a server or subprocess imported another django_idempotency than ``code``."""
    if Path(reported).resolve() != code.source.resolve():
        raise SystemExit(f"{code.label}: expected {code.source}, but {reported} was imported")


def env_for(code: Code, redis_url: str, stack: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        BENCH_STACK=stack,
        REDIS_URL=redis_url,
        PYTHONPATH=code.pythonpath,
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


class Gunicorn:
    """A gunicorn process on a free port; ``ready()`` waits for it to answer."""

    def __init__(self, code: Code, env: dict[str, str], *worker_args: str) -> None:
        self.code = code
        with contextlib.closing(__import__("socket").socket()) as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        cmd = [
            str(BIN / "gunicorn"),
            "benchmarks.wsgi:application",
            "-b",
            f"127.0.0.1:{self.port}",
            "--backlog",
            "2048",
            "--timeout",
            "60",
            "--log-level",
            "warning",
            *worker_args,
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=code.home)

    def ready(self) -> Gunicorn:
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited with {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/ping/")
                check_code(self.code, json.loads(conn.getresponse().read())["code"])
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.1)

    def workers(self) -> list[int]:
        """The pids of the worker processes (children of the gunicorn master)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rpartition(")")[2].split()[1]) == self.proc.pid:
                        found.append(int(entry.name))
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def servers(
    specs: Mapping[str, tuple[Code, dict[str, str], tuple[str, ...]]],
) -> Iterator[dict[str, Gunicorn]]:
    started = {name: Gunicorn(code, env, *args) for name, (code, env, args) in specs.items()}
    try:
        yield {name: server.ready() for name, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


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
) -> tuple[dict[str, tuple[Phase, Measured]], dict[str, list[dict[str, int]]]]:
    phases = http_phases(codes)
    sync = ("-w", "1", "-k", "sync")
    specs = {}
    for phase in phases:
        specs[server_key(phase)] = (phase.code, env_for(phase.code, redis.url, phase.stack), sync)
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
        memory = {
            code.label: measure_memory(redis, ports[f"middleware{code.suffix}"], ports["floor"])
            for code in codes
        }
    return results, memory


def measure_memory(redis: RedisServer, ours_port: int, floor_port: int) -> list[dict[str, int]]:
    """MEMORY USAGE of one stored record (and the transient wake list) per body size."""
    client = redis.client()
    rows = []
    for size in MEMORY_BODIES:
        row: dict[str, int] = {"body": size}
        for label, port in (("ours", ours_port), ("floor", floor_port)):
            client.flushall()
            key = str(uuid.uuid4())
            load.exchange(port, load.request_bytes(f"/sized/?bytes={size}", BODY, key))
            for name in client.scan_iter(count=1000):
                kind = client.type(name)
                kind = kind.decode() if isinstance(kind, bytes) else kind
                usage = int(client.memory_usage(name, samples=0) or 0)
                slot = "record" if kind == "string" else kind
                row[f"{label}_{slot}"] = row.get(f"{label}_{slot}", 0) + usage
        rows.append(row)
    client.flushall()
    return rows


def storm_server_args(args: argparse.Namespace) -> tuple[str, ...]:
    return (
        "-k",
        "gthread",
        "-w",
        str(args.storm_workers),
        "--threads",
        str(args.storm_threads),
    )


def measure_storms(
    args: argparse.Namespace, redis: RedisServer, codes: list[Code]
) -> list[dict[str, Any]]:
    """The duplicate storm through the middleware (per code, interleaved) and run()."""
    specs = {
        f"storm{c.suffix}": (c, env_for(c, redis.url, "storm"), storm_server_args(args))
        for c in codes
    }
    client = redis.client()
    url = STORM_PATH.format(ms=args.storm_sleep_ms)
    found: dict[str, dict[str, Any]] = {
        c.label: {"client": [], "server": [], "waiters": 0, "storms": 0} for c in codes
    }
    with servers(specs) as running:
        ports = {c.label: running[f"storm{c.suffix}"].port for c in codes}
        # Warm-up storms fill every worker's Redis connection pool; not measured.
        for code in codes:
            for _ in range(2):
                load.storm(ports[code.label], url, BODY, f"warm-{uuid.uuid4().hex}", args.storm)
        for _ in range(args.storm_repeats):
            for code in codes:
                replies = load.storm(
                    ports[code.label], url, BODY, f"storm-{uuid.uuid4().hex}", args.storm
                )
                owner_done = _owner_done(replies)
                if owner_done is None:
                    continue
                replayed = [r for r in replies if "x-bench-replayed-at" in r.headers]
                got = found[code.label]
                got["storms"] += 1
                got["waiters"] += len(replayed)
                got["client"] += [r.received - owner_done for r in replayed]
                got["server"] += [
                    float(r.headers["x-bench-replayed-at"]) - owner_done for r in replayed
                ]
        # Round trips, exactly: one more storm per code under MONITOR; and a long one,
        # the owner sleeping --long-sleep-ms, to see whether waiting longer costs more.
        for code in codes:
            for sleep_ms, n, key in (
                (args.storm_sleep_ms, args.storm, "round_trips"),
                (args.long_sleep_ms, args.long_storm, "long_round_trips"),
            ):
                if not n:
                    continue
                with Monitor(redis.host, redis.port) as monitor:
                    replies = load.storm(
                        ports[code.label],
                        STORM_PATH.format(ms=sleep_ms),
                        BODY,
                        f"audit-{uuid.uuid4().hex}",
                        n,
                    )
                if _owner_done(replies) is None:
                    continue
                # The owner's two scripts (claim, complete) are not the waiters'.
                found[code.label][key] = (sum(monitor.top.values()) - 2) / (n - 1)
                found[code.label][key + "_by_command"] = dict(monitor.top)
    del client
    rows: list[dict[str, Any]] = []
    for code in codes:
        got = found[code.label]
        rows.append(
            {
                "door": f"HTTP middleware{code.suffix}",
                "storms": got["storms"],
                "waiters": got["waiters"] // max(got["storms"], 1),
                "p50": load.percentile(sorted(got["client"]), 50) * 1000,
                "p99": load.percentile(sorted(got["client"]), 99) * 1000,
                "server_p50": load.percentile(sorted(got["server"]), 50) * 1000,
                "server_p99": load.percentile(sorted(got["server"]), 99) * 1000,
                "round_trips": got.get("round_trips"),
                "long_round_trips": got.get("long_round_trips"),
                "by_command": got.get("round_trips_by_command"),
                "long_by_command": got.get("long_round_trips_by_command"),
            }
        )
        log(f"storm {rows[-1]}")
    run_delays: dict[str, list[float]] = {c.label: [] for c in codes}
    run_trips: dict[str, list[float]] = {c.label: [] for c in codes}
    for _ in range(args.storm_repeats):
        for code in codes:
            out = json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.api_bench",
                        "--storm",
                        str(args.storm),
                        "--sleep-ms",
                        str(args.storm_sleep_ms),
                    ],
                    env=env_for(code, redis.url, "bare"),
                    cwd=code.home,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            check_code(code, out.pop("code"))
            run_delays[code.label] += out["delays"]
            run_trips[code.label].append(out["waiter_round_trips"] / max(out["waiters"], 1))
    for code in codes:
        delays = sorted(run_delays[code.label])
        rows.append(
            {
                "door": f"run(){code.suffix}",
                "storms": args.storm_repeats,
                "waiters": len(delays) // max(args.storm_repeats, 1),
                "p50": load.percentile(delays, 50) * 1000,
                "p99": load.percentile(delays, 99) * 1000,
                "server_p50": None,
                "server_p99": None,
                "round_trips": med(run_trips[code.label]),
                "long_round_trips": None,
                "by_command": None,
                "long_by_command": None,
            }
        )
        log(f"storm {rows[-1]}")
    return rows


def _owner_done(replies: list[load.Reply]) -> float | None:
    """When the one owner of a storm stored its response; None (and a log) if not so."""
    stored = [float(r.headers["x-bench-stored-at"]) for r in replies if _stored(r)]
    if len(stored) != 1 or any(r.status != 200 for r in replies):
        log(f"storm: {len(stored)} owners, statuses {dict(Counter(r.status for r in replies))}")
        return None
    return stored[0]


def _stored(reply: load.Reply) -> bool:
    return "x-bench-stored-at" in reply.headers


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


# -- reporting ---------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


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
            rounds = [out[f"{who}-{kind}"] for out in results[code.label]]
            floors = [out[f"floor-{kind}"] for out in results[code.label]]
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


def storm_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| door | waiters | delay p50 ms | delay p99 ms | server-side p50 / p99 ms "
        "| round trips per waiter | per waiter, long wait |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        server = (
            f"{row['server_p50']:.1f} / {row['server_p99']:.1f}"
            if row["server_p50"] is not None
            else "-"
        )
        trips = "-" if row["round_trips"] is None else f"{row['round_trips']:.2f}"
        long = "-" if row["long_round_trips"] is None else f"{row['long_round_trips']:.2f}"
        lines.append(
            f"| {row['door']} | {row['waiters']} | {row['p50']:.1f} | {row['p99']:.1f} "
            f"| {server} | {trips} | {long} |"
        )
    for row in rows:
        if row["by_command"]:
            lines.append("")
            lines.append(
                f"{row['door']}: all Redis commands sent during one storm "
                f"(owner's 2 EVALSHA included): {row['by_command']}; long wait: "
                f"{row['long_by_command']}"
            )
    return lines


def memory_table(memory: dict[str, list[dict[str, int]]], codes: list[Code]) -> list[str]:
    lines = [
        "| code | body bytes | our record | overhead | floor record | floor overhead "
        "| our wake list (a copy of the record), kept up to 2 s after completion |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for code in codes:
        for row in memory.get(code.label, []):
            body = row["body"]
            lines.append(
                f"| {code.label} | {body} | {row.get('ours_record', 0)} "
                f"| {row.get('ours_record', 0) - body} | {row.get('floor_record', 0)} "
                f"| {row.get('floor_record', 0) - body} | {row.get('ours_list', 0)} |"
            )
    return lines


def targets(
    http: dict[str, tuple[Phase, Measured]],
    storms: list[dict[str, Any]],
    memory: dict[str, list[dict[str, int]]],
    codes: list[Code],
) -> list[str]:
    """The issue's targets, each with its measured value and MET / MISSED."""

    def mark(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    def find(path_kind: str, row: str, code: Code) -> tuple[Phase, Measured] | None:
        for phase, measured in http.values():
            if phase.path_kind == path_kind and phase.row == row and phase.code == code:
                return phase, measured
        return None

    lines = []
    for code in codes:
        lines.append(f"- {code.label}:")
        for path_kind, want, trips in (("first-time", 0.95, 2), ("replay", 1.10, 1)):
            for door in ("(c) middleware", "(d) DRF mixin"):
                got = find(path_kind, door, code)
                if got is None:
                    continue
                phase, m = got
                ref = find(path_kind, str(phase.floor), codes[0])
                if ref is None:
                    continue
                value = float(ratio(http, phase, phase.floor))
                cpu = med(ref[1].worker_cpu_us) / med(m.worker_cpu_us)
                measured_trips = sum(m.audit_top.values()) / AUDIT_REQUESTS
                lines.append(
                    f"  - {path_kind} {door}: {value:.2f} x floor throughput "
                    f"(target >= {want:.2f}: {mark(value >= want)}; by worker CPU per "
                    f"request {cpu:.2f}); {measured_trips:g} round trips "
                    f"(target {trips}: {mark(measured_trips == trips)})"
                )
        for row in storms:
            if not row["door"].endswith(code.suffix) or (not code.suffix and "[" in row["door"]):
                continue
            waits = [t for t in (row["round_trips"], row["long_round_trips"]) if t is not None]
            lines.append(
                f"  - storm {row['door']}: waiter delay p99 {row['p99']:.1f} ms (target <= 20: "
                f"{mark(row['p99'] <= 20)}); round trips per waiter "
                + " / ".join(f"{t:.2f}" for t in waits)
                + f" (target <= 5: {mark(all(t <= 5 for t in waits))})"
            )
        sizes = memory.get(code.label, [])
        if sizes:
            worst = max(size.get("ours_record", 0) - size["body"] for size in sizes)
            wake = max(size.get("ours_list", 0) for size in sizes)
            lines.append(
                f"  - memory: a stored record costs at most body + {worst} bytes "
                f"(target <= 300: {mark(worst <= 300)})"
                + (
                    f", plus a {wake}-byte wake list (a copy of the record) "
                    "for up to 2 s after completion "
                    f"(body + {worst + wake} meanwhile)"
                    if wake
                    else ""
                )
            )
    return lines


def machine(redis: RedisServer, generator: str) -> list[str]:
    import django
    import redis as redis_py

    import django_idempotency

    info = redis.client().info()
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "django_idempotency"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if dirty:
        head += " plus uncommitted changes in django_idempotency/"
    wrk = "not installed"
    if shutil.which("wrk"):
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Django {django.get_version()}, "
        f"redis-py {redis_py.__version__}, gunicorn {_version('gunicorn')}, "
        f"DRF {_version('djangorestframework')}",
        f"- Redis {info['redis_version']} (allocator {info['mem_allocator']}), "
        f"load generator {generator} ({wrk})",
        f"- code: django_idempotency at {head} ({Path(django_idempotency.__file__).parent})",
    ]


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2, help="seconds per HTTP phase")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved repetitions")
    parser.add_argument("--connections", type=int, default=2, help="requests in flight")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--api-duration", type=float, default=1.2, help="s per run() phase")
    parser.add_argument("--api-rounds", type=int, default=3, help="run() subprocesses per code")
    parser.add_argument("--storm", type=int, default=100, help="concurrent duplicates")
    parser.add_argument("--storm-sleep-ms", type=int, default=200)
    parser.add_argument("--storm-repeats", type=int, default=3)
    parser.add_argument("--long-storm", type=int, default=20, help="duplicates, long wait")
    parser.add_argument("--long-sleep-ms", type=int, default=9000)
    parser.add_argument("--storm-workers", type=int, default=1)
    parser.add_argument("--storm-threads", type=int, default=128)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--output", help="results file (default: benchmarks/RESULTS.md)")
    parser.add_argument("--skip", action="append", default=[], choices=("http", "storm", "run"))
    args = parser.parse_args()
    output = args.output or ("" if args.variant else str(ROOT / "benchmarks" / "RESULTS.md"))
    generator = load.generator_name(args.generator)
    codes = code_paths(args.variant)
    started = time.monotonic()
    with RedisServer() as redis:
        http_results, memory = (
            ({}, {}) if "http" in args.skip else measure_http(args, redis, codes, generator)
        )
        storm_rows = [] if "storm" in args.skip else measure_storms(args, redis, codes)
        run_results = {} if "run" in args.skip else measure_run_api(args, redis, codes)
        about = machine(redis, generator)
    report = [
        "# Benchmark results",
        "",
        *about,
        f"- settings: {args.rounds} interleaved rounds; HTTP phases {args.duration:g} s with "
        f"{args.connections} requests in flight; run() phases {args.api_duration:g} s; "
        f"total wall time {time.monotonic() - started:.0f} s",
        "",
        "## Targets",
        "",
        *targets(http_results, storm_rows, memory, codes),
        "",
        "## HTTP: gunicorn, 1 sync worker, small JSON endpoint (medians)",
        "",
        "The view parses the JSON request body and answers a small JSON document; wrk keeps",
        f"{args.connections} requests in flight (a sync worker serves one at a time, so this",
        "keeps it busy; latency includes one queued request). (d) is compared with the same",
        "DRF view bare (a') and behind the floor (b'). x bare / x floor: median over rounds",
        "of the ratio within a round. Round trips: counted exactly (MONITOR, 20 requests).",
        "Redis cmds: INFO commandstats, an EVALSHA counted once plus every command its Lua",
        "script ran inside. Worker CPU: the gunicorn worker's user+system time (/proc) per",
        "request, less sensitive to the machine's other load than req/s. Redis CPU: INFO",
        "cpu per request (includes expiring keys written earlier).",
        "",
        *http_table(http_results),
        "",
        "Redis commands per request, by name:",
        "",
        *breakdown_lines(http_results),
        "",
        "## run() without HTTP, one thread (medians)",
        "",
        *run_table(run_results, codes),
        "",
        f"## Duplicate storm: {args.storm} concurrent duplicates, the first sleeps "
        f"{args.storm_sleep_ms} ms",
        "",
        f"HTTP: gunicorn {args.storm_workers} gthread worker(s) x {args.storm_threads} threads; "
        f"{args.storm_repeats} storms. Delay = when a waiter's response arrived at the client"
        " (server-side: when the waiter decided to replay) minus when the owner's response was"
        " stored. run(): 100 threads in one process, delay = return time minus store time.",
        "",
        *storm_table(storm_rows),
        "",
        "## Memory of one stored record (MEMORY USAGE, UUID key, anonymous scope)",
        "",
        *memory_table(memory, codes),
        "",
    ]
    text = "\n".join(report)
    print(text)
    if output:
        Path(output).write_text(text)
        log(f"written to {output}")


if __name__ == "__main__":
    main()
