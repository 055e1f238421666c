"""``assert_idempotent``: the promises battery, driven through Django's test client."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

from django.db import connections
from django.test.client import AsyncRequestFactory

from ..conf import get_settings
from . import promises
from .promises import Battery, HeadersFor, Reply, Request, Result, Sender, Transport, render


class PromiseBroken(AssertionError):
    """An endpoint broke an idempotency promise: ``broken`` names them, ``results`` has
    every row (with the requests and responses that show it)."""

    def __init__(self, message: str, results: list[Result]) -> None:
        super().__init__(message)
        self.results = results
        self.broken = [r.name for r in results if r.failed]


def assert_idempotent(
    client: Any,
    method: str,
    path: str,
    data: Any = b"",
    *,
    content_type: str = "application/json",
    headers: Mapping[str, str] | HeadersFor | None = None,
    executed: Callable[[], int] | None = None,
    concurrency: int = 10,
    conflict: str = "wait",
) -> list[Result]:
    """Check that ``method path`` keeps every idempotency promise; raise if one is broken.

    ``client`` is a ``django.test.Client`` or DRF ``APIClient``; ``data`` is sent as is
    when ``bytes`` or ``str``, else JSON- or form-encoded by ``content_type``. Returns one
    :class:`~django_idempotency.testing.promises.Result` per promise; raises
    :class:`PromiseBroken` (an ``AssertionError``) showing the responses that broke one.
    The key and replay headers are the ones ``settings.IDEMPOTENCY`` names.
    """
    if isinstance(client, AsyncRequestFactory) or not callable(getattr(client, "generic", None)):
        raise TypeError(
            "assert_idempotent() needs a django.test.Client or a DRF APIClient, "
            f"got {type(client).__name__}"
        )
    if concurrency > 1:
        open_transactions = [c.alias for c in connections.all() if c.in_atomic_block]
        if open_transactions:
            raise RuntimeError(
                "assert_idempotent() sends concurrent duplicates from threads, and their "
                "database connections cannot see this test's open transaction "
                f"(database {open_transactions[0]!r}, as in django.test.TestCase). Use "
                "TransactionTestCase (pytest-django: @pytest.mark.django_db(transaction=True)),"
                " or pass concurrency=1 to leave the concurrent checks out."
            )
    settings = get_settings()
    battery = Battery(
        method=method,
        body=encode(data, content_type),
        content_type=content_type,
        headers=headers or {},
        key_header=settings.HEADER,
        replay_header=settings.REPLAY_HEADER,
        concurrency=concurrency,
        conflict=conflict,
        executed=executed,
    )
    results = battery.run(client_transport(client, path))
    broken = [r.name for r in results if r.failed]
    if broken:
        message = f"{method.upper()} {path} broke {', '.join(broken)}:\n{render(results)}"
        raise PromiseBroken(message, results)
    return results


def encode(data: Any, content_type: str) -> bytes:
    """The request body for ``data`` sent as ``content_type``."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if promises.is_json(content_type):
        return json.dumps(data).encode()
    if promises.media_type(content_type) == promises.FORM:
        return urlencode(data, doseq=True).encode()
    raise TypeError(
        f"assert_idempotent() encodes data as JSON or {promises.FORM}; for {content_type!r} "
        "pass the body as bytes"
    )


def client_transport(client: Any, path: str) -> Transport:
    """A transport sending to ``path`` through a copy of the test ``client`` per request.

    A copy per request (sharing credentials) so threads never share the client's
    per-request state and cookies a response sets do not follow into the next request.
    Another thread's database connections are closed after its request, as a server
    thread's would be: left open, they outlive the thread and PostgreSQL refuses to drop
    the test database.
    """
    caller = threading.get_ident()

    def open_sender() -> Sender:
        own = copy.copy(client)
        own.cookies = SimpleCookie(client.cookies)

        def send(request: Request) -> Reply:
            content_type = ""
            meta: dict[str, str] = {}
            for name, value in request.headers.items():
                if name.lower() == "content-type":
                    content_type = value
                else:
                    meta["HTTP_" + name.upper().replace("-", "_")] = value
            try:
                response = own.generic(
                    request.method, path, data=request.body, content_type=content_type, **meta
                )
                streamed = response.streaming
                body = b"".join(response.streaming_content) if streamed else response.content
            finally:
                if threading.get_ident() != caller:
                    connections.close_all()
            headers = {name.lower(): value for name, value in response.items()}
            return Reply(response.status_code, headers, body)

        return send

    return open_sender
