"""``assert_idempotent``: check an endpoint's idempotency promises from a Django test.

It drives the battery of :mod:`django_idempotency.testing.promises` through Django's
test ``Client`` (or DRF's ``APIClient``), in the test's own process: the first request,
its retry, the same key with a changed body, a malformed key, and concurrent duplicates
sent from real threads released together by a barrier.
"""

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
from .promises import Battery, HeadersFor, Reply, Request, Result, Sender, Transport, render

FORM = "application/x-www-form-urlencoded"


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

    ``client`` is a ``django.test.Client`` or DRF ``APIClient``, logged in or given
    credentials as the endpoint needs. ``data`` is the request body: ``bytes`` or ``str``
    as is, anything else JSON-encoded (``content_type="application/json"``, the default)
    or form-encoded (``"application/x-www-form-urlencoded"``). ``headers`` go with every
    request; pass a callable taking the body and returning them for requests signed over
    their body (webhooks). ``executed()``, when given, returns how many side effects
    happened so far (``Charge.objects.count``, a fake gateway's call count): each key
    must add exactly one, a refused request none.

    ``concurrency`` duplicates of one new key are sent from as many threads at once;
    each thread's view uses its own database connection, which cannot see rows of a
    test's open transaction, so a test using this needs ``TransactionTestCase`` (in
    pytest-django: ``@pytest.mark.django_db(transaction=True)``), or ``concurrency=1``
    to leave the concurrent checks out. ``conflict="reject"`` expects the duplicates that
    arrive while the first runs to get 409 (a view with ``conflict="reject"``) instead
    of waiting for its response.

    The key and replay headers are the ones ``settings.IDEMPOTENCY`` names. Returns one
    :class:`~django_idempotency.testing.promises.Result` per promise; raises
    :class:`PromiseBroken` (an ``AssertionError``) naming each broken promise and showing
    the responses it saw.
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
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return json.dumps(data).encode()
    if media == FORM:
        return urlencode(data, doseq=True).encode()
    raise TypeError(
        f"assert_idempotent() encodes data as JSON or {FORM}; for {content_type!r} "
        "pass the body as bytes"
    )


def client_transport(client: Any, path: str) -> Transport:
    """A transport sending to ``path`` through a copy of the test ``client`` per request.

    Each request gets its own copy (sharing credentials and forced authentication), so
    threads never share the client's per-request state, and cookies a response sets do
    not follow into the next request: each is sent as a fresh client would send it.
    A request sent from another thread than the caller's closes that thread's database
    connections afterwards, as a server thread would: left open, they would outlive the
    thread and keep the test database busy (PostgreSQL refuses to drop it).
    """
    caller = threading.get_ident()

    def open_sender() -> Sender:
        own = copy.copy(client)
        own.cookies = SimpleCookie(client.cookies)

        def send(request: Request) -> Reply:
            meta = {
                "HTTP_" + name.upper().replace("-", "_"): value
                for name, value in request.headers.items()
                if name.lower() != "content-type"
            }
            content_type = next(
                (v for k, v in request.headers.items() if k.lower() == "content-type"), ""
            )
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
