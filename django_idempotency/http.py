"""HTTP details: request -> key, scope and fingerprint; errors -> problem+json.

Nothing here talks to a store or decides policy: the HTTP lifecycle
(:mod:`django_idempotency.flows.http`) does.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, QueryDict

from .exceptions import IdempotencyError, InvalidKey

PROBLEM_CONTENT_TYPE = "application/problem+json"
#: The default base of problem ``type`` URIs (``IDEMPOTENCY["PROBLEM_TYPE_BASE"]``): each
#: resolves to the documentation of its problem.
PROBLEM_TYPE_PREFIX = "https://django-idempotency.readthedocs.io/en/latest/reference/problems.html#"

# Never replayed: per-client or per-connection headers (RFC 9110 §7.6.1 hop-by-hop),
# and ones the server recomputes. Cookies live outside response.items() anyway.
SKIPPED_HEADERS = frozenset(
    {
        "set-cookie",
        "date",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')


def parse_key(raw: str, *, max_length: int, key_format: re.Pattern[str] | None) -> str:
    """The key from an ``Idempotency-Key`` header value, or :class:`InvalidKey`.

    Accepts the Structured Field String form (``"abc"``, with ``\\"`` and ``\\\\``
    escapes) and a bare token of visible ASCII.
    """
    value = raw.strip(" \t")
    if value.startswith('"'):
        match = _SF_STRING.fullmatch(value)
        if match is None:
            raise InvalidKey("The key is not a valid quoted string (RFC 8941 sf-string).")
        key = re.sub(r"\\(.)", r"\1", match.group(1))
    elif _VISIBLE_ASCII.fullmatch(value):
        key = value
    else:
        raise InvalidKey(
            "The key must be a quoted string or a token of visible ASCII characters."
            if value
            else "The key is empty."
        )
    if not key.strip():
        raise InvalidKey("The key is empty.")
    if len(key) > max_length:
        raise InvalidKey(f"The key is longer than {max_length} characters.")
    if key_format is not None and not key_format.fullmatch(key):
        raise InvalidKey("The key does not have the format this endpoint requires.")
    return key


#: Bodies a browser sends for an HTML form (``enctype``), which carry the key as a field.
FORM_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def form_key(request: HttpRequest, field: str) -> str | None:
    """The raw value of form field ``field`` when the body is a form, else ``None``.

    A POST's form is ``request.POST`` (parsed once, and kept for the view); another
    method's urlencoded body (htmx's ``hx-patch``) is parsed here. A multipart body of
    another method is not read: Django parses multipart for POST only.
    """
    if request.content_type not in FORM_CONTENT_TYPES:
        return None
    if request.method == "POST":
        # Parsed from the stream, a multipart body could not be read again as
        # request.body, which the fingerprint (the default one) reads next: keep it first.
        request.body  # noqa: B018
        return request.POST.get(field)
    if request.content_type == "application/x-www-form-urlencoded":
        return QueryDict(request.body, encoding=request.encoding).get(field)
    return None


def django_request(request: Any) -> HttpRequest:
    """The ``HttpRequest`` itself: a DRF ``Request`` wraps one.

    DRF forwards each attribute it lacks to the wrapped request, at about a microsecond
    per attribute; the hot path reads method, META, path and body from it directly.
    """
    return getattr(request, "_request", request)  # type: ignore[no-any-return]


def default_scope(request: HttpRequest) -> str:
    """``user:<pk>`` for an authenticated user, else ``anonymous``."""
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return "anonymous"


def default_fingerprint(request: HttpRequest) -> bytes:
    """128-bit BLAKE2b of method, path, query string and body (each length-prefixed)."""
    request = django_request(request)
    return fingerprint_of(
        request.method or "", request.path, request.META.get("QUERY_STRING", ""), request.body
    )


def fingerprint_of(method: str, path: str, query: str, body: bytes) -> bytes:
    """:func:`default_fingerprint` of a request given by its parts (as Django decodes them)."""
    method_bytes = method.encode()
    path_bytes = path.encode()
    query_bytes = query.encode("latin-1", "replace")
    return hashlib.blake2b(
        b"%d:%b%d:%b%d:%b"
        % (
            len(method_bytes),
            method_bytes,
            len(path_bytes),
            path_bytes,
            len(query_bytes),
            query_bytes,
        )
        + body,
        digest_size=16,
    ).digest()


def problem_type(error: IdempotencyError, base: str) -> str:
    """The ``type`` URI of ``error``'s problem: ``base`` (``PROBLEM_TYPE_BASE``) + its slug."""
    return base + error.type_slug


def problem_document(error: IdempotencyError, base: str) -> dict[str, Any]:
    """The RFC 9457 members describing ``error``: type, title, status and detail."""
    return {
        "type": problem_type(error, base),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }


def problem_response(error: IdempotencyError, base: str) -> HttpResponse:
    """An RFC 9457 problem+json response describing ``error`` (``base``: as for
    :func:`problem_type`).

    ``Link: <type>; rel="describedby"`` points at the problem's documentation, as the
    Idempotency-Key draft suggests; ``Retry-After`` says when a retry may succeed.
    """
    doc = problem_document(error, base)
    response = HttpResponse(json.dumps(doc), status=error.status, content_type=PROBLEM_CONTENT_TYPE)
    response["Link"] = f'<{doc["type"]}>; rel="describedby"'
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    response._idempotency_problem = error  # type: ignore[attr-defined]
    return response


def problem_of(response: HttpResponseBase | None) -> IdempotencyError | None:
    """The error a :func:`problem_response` describes (``None`` for any other response):
    for a door that hands problems to its framework's own error handling."""
    return getattr(response, "_idempotency_problem", None)


def rendered(response: HttpResponseBase) -> HttpResponseBase:
    """Render a not-yet-rendered template (or DRF) response so its bytes can be stored."""
    render = getattr(response, "render", None)
    if callable(render) and not getattr(response, "is_rendered", True):
        render()
    return response
