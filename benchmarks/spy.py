"""Where a gunicorn worker spends its time per request, side by side (needs py-spy).

Starts one gunicorn (1 sync worker) per case, drives it like ``run.py`` does, samples
the worker with ``py-spy record --gil`` (only the thread holding the GIL, so the
numbers are Python CPU, not waiting) and prints microseconds per request spent in
each function (inclusive), for the functions that differ most between the cases::

    pip install py-spy
    python benchmarks/spy.py floor:replay middleware:replay
    python benchmarks/spy.py --variant fix=/tmp/wt middleware:first middleware@fix:first

A case is ``STACK:PATH`` with STACK one of ``bare``, ``floor``, ``middleware``,
``mixin``, ``bare-drf``, ``floor-drf`` (optionally ``@VARIANT``) and PATH ``first``
or ``replay``.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.append(str(ROOT))

from benchmarks import load  # noqa: E402
from benchmarks.harness import code_paths, env_for, log, servers  # noqa: E402
from benchmarks.hotpath import BODY  # noqa: E402
from django_idempotency.testing import RedisServer  # noqa: E402

STACKS = {
    "bare": ("bare", "/plain/"),
    "floor": ("floor", "/plain/"),
    "middleware": ("middleware", "/plain/"),
    "bare-drf": ("bare", "/drf/"),
    "floor-drf": ("floor", "/drf/"),
    "mixin": ("mixin", "/drf-mixin/"),
}
_FRAME = re.compile(r"(.*) \((.*?):\d+\)$")


def fold(path: Path) -> tuple[int, collections.Counter[str]]:
    """Samples in total and per function (inclusive), from py-spy's raw output."""
    per: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        names = set()
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            names.add(f"{match.group(1)} ({Path(match.group(2)).name})" if match else frame)
        for name in names:
            per[name] += int(count)
    return total, per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="+", metavar="STACK[@VARIANT]:PATH")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    generator = load.generator_name("auto")
    codes = {code.label: code for code in code_paths(args.variant)}
    out = Path(tempfile.mkdtemp(prefix="bench-spy-"))
    results: dict[str, tuple[int, int, collections.Counter[str]]] = {}
    with RedisServer() as redis:
        for case in args.cases:
            stack_name, _, path_kind = case.partition(":")
            stack_name, _, label = stack_name.partition("@")
            code = codes[label or "HEAD"]
            stack, url = STACKS[stack_name]
            keys = load.FRESH if path_kind == "first" else load.SAME
            spec = {
                case: (code, env_for(code, redis.url, stack), "wsgi", ("-w", "1", "-k", "sync"))
            }
            with servers(spec) as running:
                server = running[case]
                load.drive(generator, server.port, url, BODY, keys, 1, 2)
                raw = out / f"{len(results)}.txt"
                recorder = subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(server.workers()[0]),
                        "--gil",
                        "--rate",
                        str(args.rate),
                        "--duration",
                        str(int(args.seconds) + 1),
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(0.5)
                got = load.drive(generator, server.port, url, BODY, keys, args.seconds, 2)
                recorder.wait()
            total, per = fold(raw)
            # Requests served while py-spy sampled: its window is ~0.5 s longer than the load.
            results[case] = (got.requests, total, per)
            log(f"{case}: {got.rps:.0f} req/s, {total} samples")
    shutil.rmtree(out, ignore_errors=True)
    us = {
        case: {name: n / args.rate / requests * 1e6 for name, n in per.items()}
        for case, (requests, _, per) in results.items()
    }
    totals = {
        case: total / args.rate / requests * 1e6 for case, (requests, total, _) in results.items()
    }

    def spread(name: str) -> float:
        values = [u.get(name, 0.0) for u in us.values()]
        return max(values) - min(values)

    ordered = sorted(set().union(*us.values()), key=spread, reverse=True)
    cases = list(results)
    print("µs per request with the GIL held, inclusive (py-spy --gil)")
    print(" ".join(f"{c[:18]:>18}" for c in cases) + "  function")
    print(" ".join(f"{totals[c]:18.1f}" for c in cases) + "  (all)")
    for name in ordered[: args.top]:
        print(" ".join(f"{us[c].get(name, 0):18.1f}" for c in cases) + f"  {name}")


if __name__ == "__main__":
    main()
