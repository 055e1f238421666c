"""Scopes the edge can compute: functions of the request's headers alone.

The edge answers before Django builds a request, so it has no ``request.user``, no
session and no middleware's work to read: only the headers. A project whose records
are scoped by an API key, a hash of its ``Authorization`` header or nothing at all
(``anonymous``) marks that function with :func:`headers_scope` and names it as
``IDEMPOTENCY["SCOPE"]``: Django's doors then call it with ``request.headers`` and the
edge with the same headers read from the raw request, so both compute one scope.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from ..http import django_request

#: The attribute :func:`headers_scope` sets on the scope it returns: the headers function.
FROM_HEADERS = "idempotency_scope_from_headers"

HeadersFunction = Callable[[Mapping[str, str]], str]


def headers_scope(func: HeadersFunction) -> Callable[[Any], str]:
    """Mark ``func(headers) -> scope`` as a scope computed from request headers alone.

    ``headers`` is Django's case-insensitive ``request.headers``. The result is the
    ``IDEMPOTENCY["SCOPE"]`` callable (it takes a request, as every scope does) and
    carries ``func`` for the edge. Example::

        @headers_scope
        def api_key_scope(headers):
            key = headers.get("X-Api-Key")
            return "key:" + hashlib.sha256(key.encode()).hexdigest() if key else "anonymous"
    """

    @functools.wraps(func)
    def scope(request: Any) -> str:
        return func(django_request(request).headers)

    setattr(scope, FROM_HEADERS, func)
    return scope


def from_headers(scope: Any) -> HeadersFunction | None:
    """The headers function of a scope marked with :func:`headers_scope` (else ``None``)."""
    return getattr(scope, FROM_HEADERS, None)
