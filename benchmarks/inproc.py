"""Per-request cost without the network: every stack in one process, interleaved.

The HTTP benchmark is the truth but noisy (a 2-core box runs gunicorn, the load
generator and Redis at once). This calls Django's ``WSGIHandler`` directly, one
handler per middleware stack in the same process, so the difference between two
stacks is their Python work plus their Redis round trips, measured to a few µs::

    python benchmarks/inproc.py                     # µs/request per stack and path
    python benchmarks/inproc.py --cprofile middleware:first --top 30
    PYTHONPATH=/tmp/wt-x python benchmarks/inproc.py   # measure another checkout
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.append(str(ROOT))  # after PYTHONPATH, so another checkout can be measured

from django_idempotency.testing import RedisServer  # noqa: E402

BODY = b'{"amount": 100, "currency": "EUR", "customer": "cus_123"}'
STACKS = {
    "bare": ([], "/plain/"),
    "floor": (["benchmarks.floor.FloorMiddleware"], "/plain/"),
    "middleware": (["django_idempotency.middleware.IdempotencyMiddleware"], "/plain/"),
    "bare-drf": ([], "/drf/"),
    "floor-drf": (["benchmarks.floor.FloorMiddleware"], "/drf/"),
    "mixin": ([], "/drf-mixin/"),
}


def environ(path: str, key: str | None) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.input": io.BytesIO(BODY),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if key is not None:
        env["HTTP_IDEMPOTENCY_KEY"] = key
    return env


def handlers() -> dict[str, Any]:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    built = {}
    for name, (middleware, _) in STACKS.items():
        with override_settings(MIDDLEWARE=middleware):
            built[name] = WSGIHandler()
    return built


def call(handler: Any, env: dict[str, Any]) -> None:
    status: list[str] = []
    body = handler(env, lambda s, h, exc_info=None: status.append(s))
    b"".join(body)
    body.close()
    if not status or not status[0].startswith("200"):
        raise SystemExit(f"unexpected response {status}")


def _fresh(handler: Any, path: str, prefix: str, i: int) -> None:
    call(handler, environ(path, f"{prefix}{i}"))


def _same(handler: Any, path: str, key: str, i: int) -> None:
    call(handler, environ(path, key))


def cases(built: dict[str, Any]) -> dict[str, Callable[[int], None]]:
    prefix = uuid.uuid4().hex[:12]
    out: dict[str, Callable[[int], None]] = {}
    for name, (_, path) in STACKS.items():
        handler = built[name]
        first, same = f"{prefix}-{name}-", f"{prefix}-{name}-same"
        out[f"{name}:first"] = functools.partial(_fresh, handler, path, first)
        if not name.startswith("bare"):
            out[f"{name}:replay"] = functools.partial(_same, handler, path, same)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="requests per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cprofile", metavar="STACK:PATH", help="profile one case instead")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with RedisServer() as redis:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="benchmarks.settings", BENCH_STACK="bare", REDIS_URL=redis.url
        )
        import django

        django.setup()
        import django_idempotency

        print(f"django_idempotency from {Path(django_idempotency.__file__).parent}")
        todo = cases(handlers())
        for run in todo.values():  # warm up
            for i in range(200):
                run(-i - 1)
        if args.cprofile:
            run = todo[args.cprofile]
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(args.n):
                run(10_000_000 + i)
            profiler.disable()
            stats = pstats.Stats(profiler).strip_dirs().sort_stats("cumulative")
            stats.print_stats(args.top)
            stats.sort_stats("tottime").print_stats(args.top)
            return
        wall: dict[str, list[float]] = {name: [] for name in todo}
        cpu: dict[str, list[float]] = {name: [] for name in todo}
        for r in range(args.rounds):
            for name, run in todo.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                for i in range(args.n):
                    run(r * args.n + i)
                cpu[name].append((time.process_time() - start_cpu) / args.n * 1e6)
                wall[name].append((time.perf_counter() - start) / args.n * 1e6)
        print("µs per request, median of rounds; CPU = this process, all threads")
        print(f"{'case':20} {'wall':>8} {'CPU':>8}")
        for name in todo:
            wall_us, cpu_us = statistics.median(wall[name]), statistics.median(cpu[name])
            print(f"{name:20} {wall_us:8.1f} {cpu_us:8.1f}")


if __name__ == "__main__":
    main()
