"""The client side: send one idempotency key per logical call, and retry it safely.

A retry is only safe when it carries the key of the attempt it repeats: the server then
runs the request once and replays its answer to every later attempt. The transports here
keep one key (a UUID4, or the caller's) for every attempt of a call and retry as
:mod:`.policy` says, against any server that follows the IETF ``Idempotency-Key`` draft
(this package's, or a Stripe-style API), without Django settings:

- httpx: :class:`IdempotentTransport` and :class:`AsyncIdempotentTransport`
  (``django_idempotency.client.httpx_transport``);
- requests: :class:`IdempotentAdapter` and :class:`IdempotentSession`
  (``django_idempotency.client.requests_adapter``).

httpx and requests are each imported only when its transport is first used (``pip
install django-idempotency[client]`` installs both). The options of both are one
:class:`RetryPolicy`; what a call came to is :func:`call_info` of its response.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .policy import CallInfo, RetriesExhausted, RetryPolicy

if TYPE_CHECKING:
    from .httpx_transport import AsyncIdempotentTransport, IdempotentTransport
    from .requests_adapter import IdempotentAdapter, IdempotentSession

__all__ = [
    "AsyncIdempotentTransport",
    "CallInfo",
    "IdempotentAdapter",
    "IdempotentSession",
    "IdempotentTransport",
    "RetriesExhausted",
    "RetryPolicy",
    "call_info",
]

# Each name's module imports its HTTP library: only the one a caller uses is imported.
_LAZY = {
    "IdempotentTransport": "httpx_transport",
    "AsyncIdempotentTransport": "httpx_transport",
    "IdempotentAdapter": "requests_adapter",
    "IdempotentSession": "requests_adapter",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def call_info(response: Any) -> CallInfo | None:
    """What the call answered by ``response`` (an httpx or requests response) came to:
    its key, how many attempts it took, whether the answer was a replay. ``None`` for a
    response that did not come through a retrying transport (or was not protected)."""
    extensions = getattr(response, "extensions", None)  # httpx keeps it there
    if isinstance(extensions, dict) and isinstance(extensions.get("idempotency"), CallInfo):
        return extensions["idempotency"]  # type: ignore[no-any-return]
    found = getattr(response, "idempotency", None)  # requests: an attribute
    return found if isinstance(found, CallInfo) else None
