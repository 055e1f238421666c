"""Per-request cost without the network: every stack in one process, interleaved.

The HTTP benchmark is the truth but noisy (a 2-core box runs gunicorn, the load
generator and Redis at once). This calls Django's ``WSGIHandler`` directly, one
handler per middleware stack in the same process, so the difference between two
stacks is their Python work plus their Redis round trips, measured to a few µs::

    python benchmarks/inproc.py                     # µs/request per stack and path
    python benchmarks/inproc.py --cprofile middleware:first --top 30
    python benchmarks/inproc.py --only sealer       # integrity + compression, 1 KiB
    PYTHONPATH=/tmp/wt-x python benchmarks/inproc.py   # measure another checkout

The ``seal:*`` cases time what the stored format adds to one request, without Redis:
sealing a final record of a 1 KiB response (HMAC-SHA256, and compression when it pays)
and opening it again (verify, decompress), through ``django_idempotency.records.Sealer``.
``seal:mac`` has compression off; ``seal:zlib`` and ``seal:zstd`` compress a 1 KiB JSON
body; ``seal:zstd-incompressible`` tries on random bytes and keeps them as they are.
``--json`` prints the medians as JSON (``benchmarks/run.py`` reads it).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import functools
import io
import json
import os
import pstats
import statistics
import struct
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


SEAL_BODY_BYTES = 1024
#: ``seal:*`` case -> (payload bytes, stored record bytes).
SEALED_BYTES: dict[str, tuple[int, int]] = {}


def sealer_cases() -> dict[str, Callable[[int], None]]:
    """The stored format's work per request, first-time and replay, 1 KiB response."""
    from benchmarks.bodies import incompressible, typical_json
    from django_idempotency.events import Door
    from django_idempotency.records import (
        Kind,
        Record,
        Sealer,
        State,
        encode_http,
        record_id,
    )

    headers = [("Content-Type", "application/json"), ("X-Frame-Options", "DENY")]
    json_body = typical_json(SEAL_BODY_BYTES)[:SEAL_BODY_BYTES]
    random_body = incompressible(SEAL_BODY_BYTES)
    secret = "benchmarks-only-not-secret"
    sealers = {
        "mac": (Sealer([secret], compress_min_bytes=None), json_body),
        "zlib": (Sealer([secret], compress_min_bytes=1024, zstd=False), json_body),
        "zstd": (Sealer([secret], compress_min_bytes=1024, zstd=True), json_body),
        "zstd-incompressible": (Sealer([secret], compress_min_bytes=1024), random_body),
    }
    key = str(uuid.uuid4())
    rid = record_id(Kind.HTTP, "anonymous", key)
    token, fingerprint = os.urandom(12), os.urandom(16)

    # What a request does to the stored format: every claim builds a running record; a
    # first-time request then seals the final one, a replay opens it.
    def first(sealer: Any, record: Any, i: int) -> None:
        sealer.running(rid, Kind.HTTP, record.scope, record.key, token, fingerprint, 1)
        sealer.seal(rid, record)

    def replay(sealer: Any, record: Any, sealed: bytes, i: int) -> None:
        sealer.running(rid, Kind.HTTP, record.scope, record.key, token, fingerprint, 1)
        sealer.open(rid, sealed)

    out: dict[str, Callable[[int], None]] = {}
    base = Record(
        state=State.DONE,
        kind=Kind.HTTP,
        door=Door.MIDDLEWARE,
        scope=b"anonymous",
        key=key.encode(),
        fingerprint=fingerprint,
        created_ms=1_760_000_000_000,
        finished_ms=1_760_000_000_012,
        status=201,
        payload=encode_http(headers, json_body),
    )
    out["seal:plain:first"] = functools.partial(_plain_first, base, token)
    out["seal:plain:replay"] = functools.partial(_plain_replay, _plain_bytes(base))
    for name, (sealer, body) in sealers.items():
        record = dataclasses.replace(base, payload=encode_http(headers, body))
        sealed = sealer.seal(rid, record)
        if sealer.open(rid, sealed) != record:
            raise SystemExit(f"seal:{name}: the record does not open to what was sealed")
        SEALED_BYTES[f"seal:{name}:first"] = (len(record.payload), len(sealed))
        out[f"seal:{name}:first"] = functools.partial(first, sealer, record)
        out[f"seal:{name}:replay"] = functools.partial(replay, sealer, record, sealed)
    return out


# The baseline the stored format's guarantees are measured against: the same fields packed
# and unpacked with no MAC, no compression and no encryption.
_PLAIN = struct.Struct(">c6sIHBB")


def _plain_bytes(record: Any) -> bytes:
    return (
        _PLAIN.pack(
            b"D",
            record.created_ms.to_bytes(6, "big"),
            12,
            record.status,
            len(record.fingerprint),
            len(record.scope),
        )
        + record.fingerprint
        + record.scope
        + record.key
        + record.payload
    )


def _plain_first(record: Any, token: bytes, i: int) -> None:
    b"R" + token + record.created_ms.to_bytes(6, "big") + record.fingerprint + record.scope
    _plain_bytes(record)


def _plain_replay(raw: bytes, i: int) -> None:
    from django_idempotency.records import Kind, Record, State

    _, created, elapsed, status, fp_len, scope_len = _PLAIN.unpack_from(raw)
    pos = _PLAIN.size
    fingerprint, pos = raw[pos : pos + fp_len], pos + fp_len
    scope, pos = raw[pos : pos + scope_len], pos + scope_len
    key, payload = raw[pos : pos + 36], raw[pos + 36 :]
    ms = int.from_bytes(created, "big")
    Record(State.DONE, Kind.HTTP, scope, key, fingerprint, ms, ms + elapsed, status, payload)


def measure(todo: dict[str, Callable[[int], None]], n: int, rounds: int) -> dict[str, Any]:
    for run in todo.values():  # warm up
        for i in range(200):
            run(-i - 1)
    wall: dict[str, list[float]] = {name: [] for name in todo}
    cpu: dict[str, list[float]] = {name: [] for name in todo}
    for r in range(rounds):
        for name, run in todo.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for i in range(n):
                run(r * n + i)
            cpu[name].append((time.process_time() - start_cpu) / n * 1e6)
            wall[name].append((time.perf_counter() - start) / n * 1e6)
    return {
        name: {"wall_us": statistics.median(wall[name]), "cpu_us": statistics.median(cpu[name])}
        for name in todo
    }


def profile(run: Callable[[int], None], n: int, top: int) -> None:
    for i in range(200):
        run(-i - 1)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        run(10_000_000 + i)
    profiler.disable()
    stats = pstats.Stats(profiler).strip_dirs().sort_stats("cumulative")
    stats.print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="requests per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("http", "sealer"), help="one group of cases")
    parser.add_argument("--cprofile", metavar="CASE", help="profile one case instead")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        todo: dict[str, Callable[[int], None]] = {}
        if args.only != "sealer":
            redis = stack.enter_context(RedisServer())
            os.environ.update(
                DJANGO_SETTINGS_MODULE="benchmarks.settings",
                BENCH_STACK="bare",
                REDIS_URL=redis.url,
            )
            import django

            django.setup()
            from django_idempotency.runtime import get_engine

            # Stop the notifier before Redis goes, so it does not warn about it.
            stack.callback(lambda: get_engine().close())
            todo.update(cases(handlers()))
        if args.only != "http":
            todo.update(sealer_cases())
        import django_idempotency

        where = Path(django_idempotency.__file__).parent
        if args.cprofile:
            if args.cprofile not in todo:
                raise SystemExit(f"--cprofile: no case {args.cprofile!r}; one of {list(todo)}")
            print(f"django_idempotency from {where}")
            profile(todo[args.cprofile], args.n, args.top)
            return
        results = measure(todo, args.n, args.rounds)
    if args.json:
        print(json.dumps({"code": str(where), "results": results, "sealed": SEALED_BYTES}))
        return
    print(f"django_idempotency from {where}")
    print("µs per request, median of rounds; CPU = this process, all threads")
    print(f"{'case':26} {'wall':>8} {'CPU':>8}")
    for name, got in results.items():
        sizes = SEALED_BYTES.get(name)
        stored = f"  {sizes[0]} -> {sizes[1]} bytes stored" if sizes else ""
        print(f"{name:26} {got['wall_us']:8.1f} {got['cpu_us']:8.1f}{stored}")


if __name__ == "__main__":
    main()
