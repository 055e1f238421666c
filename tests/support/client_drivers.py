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


#: (url, policy, method, headers, body, read_timeout) -> Answer
Send = Callable[..., Answer]


def _lower(headers: object) -> dict[str, str]:
    return {k.lower(): v for k, v in dict(headers).items()}  # type: ignore[call-overload]


def httpx_sync(
    url: str,
    policy: RetryPolicy,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    body: Any = b"{}",
    read_timeout: float = 30,
) -> Answer:
    timeout = httpx.Timeout(30, read=read_timeout)
    with httpx.Client(transport=IdempotentTransport(policy=policy), timeout=timeout) as client:
        response = client.request(method, url, headers=headers, content=body)
        return Answer(
            response.status_code, _lower(response.headers), response.content, call_info(response)
        )


def httpx_async(
    url: str,
    policy: RetryPolicy,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    body: Any = b"{}",
    read_timeout: float = 30,
) -> Answer:
    async def call() -> Answer:
        timeout = httpx.Timeout(30, read=read_timeout)
        transport = AsyncIdempotentTransport(policy=policy)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            if hasattr(body, "__next__"):  # an async client streams an async iterator
                chunks = list(body)

                async def stream() -> Any:
                    for chunk in chunks:
                        yield chunk

                content: Any = stream()
            else:
                content = body
            response = await client.request(method, url, headers=headers, content=content)
            return Answer(
                response.status_code,
                _lower(response.headers),
                response.content,
                call_info(response),
            )

    return asyncio.run(call())


def requests_session(
    url: str,
    policy: RetryPolicy,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    body: Any = b"{}",
    read_timeout: float = 30,
) -> Answer:
    with IdempotentSession(policy=policy) as session:
        response = session.request(
            method, url, headers=headers, data=body, timeout=(30, read_timeout)
        )
        return Answer(
            response.status_code, _lower(response.headers), response.content, call_info(response)
        )


DRIVERS: dict[str, Send] = {
    "httpx": httpx_sync,
    "httpx-async": httpx_async,
    "requests": requests_session,
}

#: The error each library's callers catch around a request.
LIBRARY_ERRORS: dict[str, type[Exception]] = {
    "httpx": httpx.HTTPError,
    "httpx-async": httpx.HTTPError,
    "requests": requests.RequestException,
}
