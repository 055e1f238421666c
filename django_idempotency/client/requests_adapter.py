"""requests: an adapter (and a session using it) that sends one idempotency key per
logical call and retries it safely (the rule is :mod:`.policy`'s; this module only
performs it).

::

    session = IdempotentSession()                       # or, on a session of your own:
    session.mount("https://", IdempotentAdapter(policy=RetryPolicy(deadline=10)))
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import RetryError, SSLError

from .policy import RetriesExhausted, RetryPolicy, drive

#: Errors after which the request may or may not have reached the server: it is sent
#: again with the same key (``ConnectionError`` covers a connection closed before the
#: answer). A TLS failure would fail the same way again and is raised as it is.
RETRIED_ERRORS: tuple[type[Exception], ...] = (requests.ConnectionError, requests.Timeout)

#: What ``timeout`` may be in :meth:`HTTPAdapter.send`: seconds, or (connect, read).
TimeoutType = float | tuple[float | None, float | None] | None


class RequestsRetriesExhausted(RetriesExhausted, RetryError):
    """:class:`~.policy.RetriesExhausted`, also a ``requests.RequestException`` (so an
    ``except requests.RequestException`` around the call catches it)."""


def _replayable(request: requests.PreparedRequest) -> None:
    """Read a body given as a file or an iterator once, so every attempt sends it whole."""
    body = request.body
    if body is None or isinstance(body, (bytes, str)):
        return
    chunks = [body.read()] if hasattr(body, "read") else list(body)
    request.body = b"".join(c.encode() if isinstance(c, str) else c for c in chunks)
    request.headers.pop("Transfer-Encoding", None)
    request.headers["Content-Length"] = str(len(request.body))


def _cut(timeout: TimeoutType, left: float | None) -> TimeoutType:
    """``timeout`` cut to what is left of the deadline."""
    if left is None:
        return timeout
    if isinstance(timeout, tuple):
        return tuple(left if t is None else min(t, left) for t in timeout)  # type: ignore[return-value]
    return left if timeout is None else min(timeout, left)


def _close(response: requests.Response, read: bool) -> None:
    if read:
        response.content  # noqa: B018 (read now: the caller may read it later)
    response.close()


class IdempotentAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that adds an ``Idempotency-Key`` to each protected request (POST
    and PATCH by default) and retries it with the same key as ``policy`` (a
    :class:`RetryPolicy`) says. Other keyword arguments go to ``HTTPAdapter``.

    The response that answers the call carries a :class:`~.policy.CallInfo`
    (:func:`django_idempotency.client.call_info`); giving up raises
    :class:`RequestsRetriesExhausted`.
    """

    def __init__(self, *, policy: RetryPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy if policy is not None else RetryPolicy()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: TimeoutType = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        """Send ``request``: once if unprotected, else until the policy has an answer."""
        flow = self.policy.start(request, RequestsRetriesExhausted)
        if flow is None:
            return super().send(request, stream, timeout, verify, cert, proxies)
        _replayable(request)
        once = super().send

        def send(left: float | None) -> requests.Response | Exception:
            try:
                return once(request, stream, _cut(timeout, left), verify, cert, proxies)
            except SSLError:  # a ConnectionError, but one that would fail the same way again
                raise
            except RETRIED_ERRORS as exc:
                return exc

        response, info = drive(flow, send, _close)
        response.idempotency = info  # type: ignore[attr-defined]
        return response


class IdempotentSession(requests.Session):
    """A ``requests.Session`` whose ``http://`` and ``https://`` requests go through an
    :class:`IdempotentAdapter` with ``policy``."""

    def __init__(self, *, policy: RetryPolicy | None = None) -> None:
        super().__init__()
        adapter = IdempotentAdapter(policy=policy)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
