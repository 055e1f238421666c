"""The edge for ASGI: :func:`asgi_app` wraps the project's ASGI application.

A covered request with a key has its body read here (up to Django's own limit); the
decision runs on ``redis.asyncio``; an answer is sent at once, and any other request
goes to the application with every message it sent, unchanged.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.http import HttpResponse

from ..runtime import get_engine
from ..steps import adrive
from .decide import Edge, RawRequest, body_limit, response_headers

logger = logging.getLogger("django_idempotency")

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _meta(scope: Scope) -> dict[str, Any]:
    """The headers as ``request.META`` holds them, built as Django's ``ASGIRequest`` does.

    Names with ``_`` are dropped (they could pose as ``-``), repeated ones joined with a
    comma: the scope function then sees what it sees inside Django.
    """
    meta: dict[str, Any] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin1")
        if "_" in name:
            continue
        if name == "content-length":
            field = "CONTENT_LENGTH"
        elif name == "content-type":
            field = "CONTENT_TYPE"
        else:
            field = "HTTP_" + name.upper().replace("-", "_")
        value = raw_value.decode("latin1")
        meta[field] = meta[field] + "," + value if field in meta else value
    return meta


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, list[Message]]:
    """The body (``None``: larger than ``limit``, or the client left) and the messages read."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        size += len(message.get("body", b""))
        if size > limit:
            return None, messages
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in messages), messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that first gives back the messages the edge already read."""
    pending = deque(messages)

    async def again() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return again


async def _send_response(response: HttpResponse, send: Send) -> None:
    headers = [(k.encode("latin1"), v.encode("latin1")) for k, v in response_headers(response)]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})


def asgi_app(application: ASGIApp) -> ASGIApp:
    """Wrap a Django ASGI application so finished records are replayed before it runs.

    Call it once at start-up, after ``get_asgi_application()``; it raises
    ``ImproperlyConfigured`` when the project's ``IDEMPOTENCY["SCOPE"]`` is not computed
    from headers alone (see :func:`~django_idempotency.edge.headers_scope`).
    """
    edge = Edge()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await application(scope, receive, send)
        method = scope["method"].upper()
        # The method first: most requests are not covered, and need no headers read.
        if method not in edge.options().methods:
            return await application(scope, receive, send)
        meta = _meta(scope)
        if not edge.wants(method, meta):
            return await application(scope, receive, send)
        body, messages = await _read_body(receive, body_limit())
        receive = _replaying(messages, receive)
        if body is None:
            return await application(scope, receive, send)
        query = scope.get("query_string", b"")
        try:
            # As Django decodes it: a query string that is not UTF-8 is Django's to refuse.
            query = query.decode() if isinstance(query, bytes) else query
        except UnicodeDecodeError:
            return await application(scope, receive, send)
        try:
            answer = await adrive(
                get_engine().context,
                edge.deciding(RawRequest(method, scope["path"], query, meta, body)),
            )
        except Exception:
            # Nothing was answered: Django handles the request as if there were no edge.
            logger.warning("edge: could not decide; handing the request to Django", exc_info=True)
            answer = None
        if answer is None:
            return await application(scope, receive, send)
        await _send_response(answer, send)
        return None

    return app
