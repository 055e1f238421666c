"""The server alone: what no edge in front of Django can beat, on the same server.

``BENCH_EDGE=ceiling`` wraps the benchmark project in one of these: a covered POST is
answered at once with a fixed replay-sized response after its body is read (no Django,
no Redis, no idempotency work), anything else (``/ping/``) goes to Django. Its req/s
over the floor's is the ceiling of the edge's ratio on that server: where it is low,
the server's own per-request cost is the limit, not the edge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

BODY = b'{"id": 1234, "status": "created", "amount": 100, "currency": "EUR"}'
HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(BODY))),
    ("Idempotent-Replayed", "true"),
]


def wsgi_ceiling(application: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering every POST itself; the rest goes to ``application``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "POST":
            return application(environ, start_response)
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", HEADERS)
        return [BODY]

    return app


def asgi_ceiling(application: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """An ASGI app answering every POST itself; the rest goes to ``application``."""
    headers = [(k.lower().encode(), v.encode()) for k, v in HEADERS]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await application(scope, receive, send)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})
        return None

    return app
