"""httpx transports, sync and async, that send one idempotency key per logical call and
retry it safely (the rule is :mod:`.policy`'s; this module only performs it).

::

    client = httpx.Client(transport=IdempotentTransport())
    async_client = httpx.AsyncClient(transport=AsyncIdempotentTransport())

Each wraps another transport (default: httpx's own, ``httpx.HTTPTransport()``): give it
yours to set TLS, proxies or limits, which httpx reads from the transport, not the
client, once a transport is given.
"""

from __future__ import annotations

import anyio
import httpx

from .policy import CallInfo, RetriesExhausted, RetryPolicy, adrive, drive

#: Errors after which the request may or may not have reached the server: it is sent
#: again with the same key. Anything else (an unsupported URL, a proxy that refused, a
#: malformed request) would fail the same way again and is raised as it is.
RETRIED_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


class HTTPXRetriesExhausted(RetriesExhausted, httpx.TransportError):
    """:class:`~.policy.RetriesExhausted`, also an ``httpx.TransportError`` (so an
    ``except httpx.HTTPError`` around the call catches it)."""


def _cut(request: httpx.Request, left: float | None) -> None:
    """Cut this attempt's timeouts to what is left of the deadline (which only shrinks, so
    cutting the last attempt's is the same as cutting the caller's)."""
    if left is not None:
        timeouts = request.extensions.get("timeout", {})
        request.extensions["timeout"] = {
            name: left if value is None else min(value, left) for name, value in timeouts.items()
        }


def _answered(answer: tuple[httpx.Response, CallInfo]) -> httpx.Response:
    response, info = answer
    response.extensions["idempotency"] = info  # where call_info() looks for it
    return response


def _close(response: httpx.Response, read: bool) -> None:
    if read:
        response.read()
    response.close()


async def _aclose(response: httpx.Response, read: bool) -> None:
    if read:
        await response.aread()
    await response.aclose()


class IdempotentTransport(httpx.BaseTransport):
    """Adds an ``Idempotency-Key`` to each protected request (POST and PATCH by default)
    and retries it with the same key as ``policy`` (a :class:`RetryPolicy`) says.

    The response that answers the call carries a :class:`~.policy.CallInfo`
    (:func:`django_idempotency.client.call_info`); giving up raises
    :class:`HTTPXRetriesExhausted`.
    """

    def __init__(
        self, transport: httpx.BaseTransport | None = None, *, policy: RetryPolicy | None = None
    ) -> None:
        self.transport = transport if transport is not None else httpx.HTTPTransport()
        self.policy = policy if policy is not None else RetryPolicy()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``: once if unprotected, else until the policy has an answer."""
        flow = self.policy.start(request, HTTPXRetriesExhausted)
        if flow is None:
            return self.transport.handle_request(request)
        request.read()  # a streamed body is buffered, so every attempt can send it

        def send(left: float | None) -> httpx.Response | Exception:
            _cut(request, left)
            try:
                return self.transport.handle_request(request)
            except RETRIED_ERRORS as exc:
                return exc

        return _answered(drive(flow, send, _close))

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()


class AsyncIdempotentTransport(httpx.AsyncBaseTransport):
    """:class:`IdempotentTransport` for ``httpx.AsyncClient`` (asyncio or trio)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.policy = policy if policy is not None else RetryPolicy()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``: once if unprotected, else until the policy has an answer."""
        flow = self.policy.start(request, HTTPXRetriesExhausted)
        if flow is None:
            return await self.transport.handle_async_request(request)
        await request.aread()  # a streamed body is buffered, so every attempt can send it

        async def send(left: float | None) -> httpx.Response | Exception:
            _cut(request, left)
            try:
                return await self.transport.handle_async_request(request)
            except RETRIED_ERRORS as exc:
                return exc

        return _answered(await adrive(flow, send, _aclose, anyio.sleep))

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()
