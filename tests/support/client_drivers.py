"""One POST through each retrying client (httpx sync, httpx async, requests), with one
shape of answer, so a test of the client's behaviour runs over all three."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import requests

from django_idempotency.client import (
    AsyncIdempotentTransport,
    CallInfo,
    IdempotentSession,
    IdempotentTransport,
    RetryPolicy,
    call_info,
)


@dataclass(frozen=True)
class Answer:
    """The response a call returned, and what the client says the call came to."""

    status: int
    headers: dict[str, str]
    body: bytes
    info: CallInfo | None

    @property
    def call(self) -> CallInfo:
        """:attr:`info`, which a protected call always has."""
        assert self.info is not None, "the response carries no CallInfo"
        return self.info


@dataclass(frozen=True)
class Call:
    """One logical call to make through a client (a POST of ``{}`` unless told)."""

    url: str
    policy: RetryPolicy
    method: str = "POST"
    headers: dict[str, str] | None = None
    body: Any = b"{}"
    read_timeout: float = 30


#: (url, policy, method, headers, body, read_timeout), as :class:`Call` takes them -> Answer
Send = Callable[..., Answer]


def _answer(response: httpx.Response | requests.Response) -> Answer:
    headers = {k.lower(): v for k, v in response.headers.items()}
    return Answer(response.status_code, headers, response.content, call_info(response))


def httpx_sync(call: Call) -> Answer:
    timeout = httpx.Timeout(30, read=call.read_timeout)
    transport = IdempotentTransport(policy=call.policy)
    with httpx.Client(transport=transport, timeout=timeout) as client:
        return _answer(
            client.request(call.method, call.url, headers=call.headers, content=call.body)
        )


def httpx_async(call: Call) -> Answer:
    async def send() -> Answer:
        timeout = httpx.Timeout(30, read=call.read_timeout)
        transport = AsyncIdempotentTransport(policy=call.policy)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            content = call.body
            if hasattr(content, "__next__"):  # an async client streams an async iterator
                chunks = list(content)

                async def stream() -> Any:
                    for chunk in chunks:
                        yield chunk

                content = stream()
            return _answer(
                await client.request(call.method, call.url, headers=call.headers, content=content)
            )

    return asyncio.run(send())


def requests_session(call: Call) -> Answer:
    timeout = (30, call.read_timeout)
    with IdempotentSession(policy=call.policy) as session:
        return _answer(
            session.request(
                call.method, call.url, headers=call.headers, data=call.body, timeout=timeout
            )
        )


def _sender(perform: Callable[[Call], Answer]) -> Send:
    return lambda *args, **kwargs: perform(Call(*args, **kwargs))


DRIVERS: dict[str, Send] = {
    "httpx": _sender(httpx_sync),
    "httpx-async": _sender(httpx_async),
    "requests": _sender(requests_session),
}

#: The error each library's callers catch around a request.
LIBRARY_ERRORS: dict[str, type[Exception]] = {
    "httpx": httpx.HTTPError,
    "httpx-async": httpx.HTTPError,
    "requests": requests.RequestException,
}
