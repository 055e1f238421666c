"""What the edge decides for one raw request: answer it now, or hand it to Django.

The ASGI and WSGI adapters read the raw request (method, path, query string, headers,
body) into a :class:`RawRequest` and drive :meth:`Edge.deciding` with the blocking or
asyncio driver. It answers only what is already decided by a finished record of the
same scope and key: the replay (``Idempotent-Replayed: true``), the ``422`` of a key
reused with another request, the ``500`` of a record that fails its MAC, or the problem
of a response that could not be stored. Everything else goes into Django unchanged,
where the middleware and the doors handle it: no key or a malformed one, a method the
settings do not cover, no record yet, a running record, a store error (``fail_open``
and ``fail_closed`` are Django's to apply), a scope function that raised.

The rules are the core's: the key is parsed by :func:`~django_idempotency.http.parse_key`,
the fingerprint is :func:`~django_idempotency.http.fingerprint_of`, the record is read
and verified (MAC, scope, key) by :meth:`Engine.looking`, the answer is built and its
outcome reported by :meth:`HttpFlow.replay`, so an edge replay is the in-Django replay
with the door ``edge``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.http.request import HttpHeaders

from ..engine import Found, mismatch
from ..events import Door, Outcome, emit
from ..exceptions import FingerprintMismatch, InvalidKey, RecordTampered
from ..flows.http import HttpFlow, stored_fingerprint
from ..http import default_fingerprint, fingerprint_of, parse_key, problem_response
from ..options import HttpOptions
from ..records import Kind, State
from ..runtime import get_engine
from ..steps import Flow
from ..stores.base import StoreError
from .scope import from_headers

logger = logging.getLogger("django_idempotency")


@dataclass(frozen=True, slots=True)
class RawRequest:
    """A request as the server gave it, decoded as Django decodes it.

    ``meta`` holds the headers as ``HTTP_*`` keys (plus ``CONTENT_TYPE`` and
    ``CONTENT_LENGTH``), as in ``request.META``; under WSGI it is the environ itself.
    """

    method: str
    path: str
    query: str
    meta: dict[str, Any]
    body: bytes


def _name(value: Any) -> str:
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(value)


def unsupported(options: HttpOptions) -> str | None:
    """Why the edge cannot decide under these options (``None``: it can)."""
    if from_headers(options.scope) is None:
        return (
            f'IDEMPOTENCY["SCOPE"] is {_name(options.scope)}, which is not marked as computed '
            "from request headers alone. The edge answers before Django runs, so it has no "
            "session and no request.user: the default scope (user:<pk>) and any scope that "
            "reads them can only be computed inside Django, and a replay under a scope "
            'computed otherwise could reach another client. Set IDEMPOTENCY["SCOPE"] to a '
            "function decorated with @django_idempotency.edge.headers_scope (an API key, a "
            "hash of the Authorization header, or anonymous), or do not wrap the application."
        )
    if options.fingerprint is not default_fingerprint:
        return (
            f'IDEMPOTENCY["FINGERPRINT"] is {_name(options.fingerprint)}; the edge computes '
            "only the default fingerprint (method, path, query string and body) from the raw "
            "request, and a custom one needs Django's request. Use the default fingerprint "
            "or do not wrap the application."
        )
    return None


def body_limit() -> int:
    """The most request body bytes the edge reads before handing the request to Django.

    Django's own limit on ``request.body`` (``DATA_UPLOAD_MAX_MEMORY_SIZE``; when that is
    ``None``, ``FILE_UPLOAD_MAX_MEMORY_SIZE``): a larger body is Django's to refuse.
    """
    from django.conf import settings

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return int(limit if limit is not None else settings.FILE_UPLOAD_MAX_MEMORY_SIZE)


class Edge:
    """The decision for one application: shared by the ASGI and the WSGI adapter.

    It applies the middleware's options (the settings, merged once and merged again
    when they change), so the edge and the middleware cover the same methods and read
    the same header, key limits and scope.
    """

    def __init__(self) -> None:
        self.flow = HttpFlow(Door.EDGE)
        reason = unsupported(self.options())
        if reason is not None:
            raise ImproperlyConfigured(f"django_idempotency.edge cannot start: {reason}")

    def options(self) -> HttpOptions:
        """What the edge applies now: the settings as the middleware applies them."""
        return self.flow.overrides.http()

    def wants(self, method: str, meta: dict[str, Any]) -> bool:
        """Whether a request may be answered here at all: covered method, key header sent.

        Cheap, so a request the edge cannot answer does not wait for its body to be read.
        """
        options = self.options()
        return method in options.methods and options.header_meta_key in meta

    def deciding(self, request: RawRequest) -> Flow[HttpResponse | None]:
        """The answer for ``request``, or ``None`` to hand it to Django (a flow to drive)."""
        options = self.options()
        scope_of = from_headers(options.scope)
        # The settings may have changed since the edge started: then Django decides.
        if scope_of is None or unsupported(options) is not None:
            return None
        raw_key = request.meta.get(options.header_meta_key)
        if request.method not in options.methods or raw_key is None:
            return None
        try:
            key = parse_key(
                raw_key, max_length=options.max_key_length, key_format=options.key_format
            )
        except InvalidKey:
            return None  # the door answers 400, or steps aside for an exempt view
        started = time.monotonic()
        try:
            scope = str(scope_of(HttpHeaders(request.meta)))
        except Exception:
            # Raised again inside Django, where it is reported like any error of a view.
            logger.debug("edge: the scope function raised; handing the request to Django")
            return None
        try:
            record = yield from get_engine().looking(Kind.HTTP, Door.EDGE, scope, key)
        except RecordTampered as exc:
            return problem_response(exc, options.problem_type_base)  # reported, as critical
        except FingerprintMismatch as exc:  # another scope and key under this record id
            emit(Outcome.MISMATCH, Door.EDGE, scope, key, started=started)
            return problem_response(exc, options.problem_type_base)
        except StoreError:
            return None
        if record is None or record.state is State.RUNNING:
            return None
        fingerprint = stored_fingerprint(
            fingerprint_of(request.method, request.path, request.query, request.body)
        )
        if record.fingerprint != fingerprint:
            # Only the middleware is sure to have used the settings' fingerprint: a view's
            # own door may compute another one, and the request is then its to judge.
            if record.door is not Door.MIDDLEWARE:
                return None
            emit(Outcome.MISMATCH, Door.EDGE, scope, key, started=started)
            return problem_response(mismatch(record), options.problem_type_base)
        return self.flow.replay(None, scope, key, started, Found(record), options)


def response_headers(response: HttpResponse) -> list[tuple[str, str]]:
    """The headers the edge sends, as Django's handlers would, with the body's length.

    An answer has no cookies (a replay never carries ``Set-Cookie``). Django leaves
    ``Content-Length`` to ``CommonMiddleware`` or the server: the edge knows the body,
    so it sends it and the server need not chunk.
    """
    return [*response.items(), ("Content-Length", str(len(response.content)))]
