"""When a call that carries an idempotency key is sent again: the one rule every transport
shares, written once as a flow of steps (:meth:`RetryPolicy.flow`) that :func:`drive`
performs with blocking calls and :func:`adrive` awaits; the httpx transports and the
requests adapter only give them their library's I/O.

One *logical call* gets one key, minted here (a UUID4) unless the caller set one, and
keeps it for every attempt. After each attempt, the flow decides:

- an error where the request may or may not have reached the server (the transport
  says which: connection errors, timeouts, a connection closed before the answer) is
  retried: the server either never saw it, or replays the first execution's answer;
- a response is retried when its status is one of ``retry_statuses`` (default 409,
  500, 502, 503, 504), except that a 4xx there (409 "in progress", or a 429 added by the
  caller) retries only when it carries ``Retry-After``: without it, it is a conflict of
  the caller's own making that another attempt will not change; a response marked as a
  replay (``Idempotent-Replayed: true``) is the stored answer and never retried; a
  server that says whether to retry (``should_retry_header``, e.g. Stripe's
  ``Stripe-Should-Retry``) is believed;
- 400 and 422 never retry: the same request with the same key can only get them again.

Between attempts it pauses: ``Retry-After`` when the server sent one, else exponential
backoff with jitter. It gives up, raising :class:`RetriesExhausted` with the key, after
``max_attempts`` attempts or when the next attempt could not start before the
``deadline`` (counted from the first attempt; each attempt's own timeouts are cut to what
is left of it).
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeAlias, TypeVar, cast

from ..exceptions import InvalidKey
from ..http import parse_key
from ..options import InvalidOption, bad, boolean, duration, positive_int, text
from ..options import methods as method_names

logger = logging.getLogger("django_idempotency.client")

#: A response of the driver's HTTP library.
R = TypeVar("R")

#: Answers the same request with the same key can only get again.
NEVER_RETRIED = frozenset({400, 422})


def new_uuid4() -> str:
    """A random UUID4, the default key of a logical call."""
    return str(uuid.uuid4())


def quoted(key: str) -> str:
    """``key`` as a Structured Field String, the header form the IETF draft specifies."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delta-seconds or an HTTP-date), or
    ``None`` when it is absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; a date without a zone is read as such
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass(frozen=True)
class CallInfo:
    """What one logical call came to: attached to the response it returned.

    Read it with :func:`django_idempotency.client.call_info`. Log ``key``: a support
    engineer finds the server's record with ``manage.py idempotency_inspect show KEY``.
    """

    #: The idempotency key every attempt carried.
    key: str
    #: How many attempts were sent (1 when the first one answered).
    attempts: int
    #: Whether the answer was a replay of an earlier execution (``Idempotent-Replayed``).
    replayed: bool


class RetriesExhausted(Exception):
    """The call was given up: out of attempts, or the next one would pass the deadline.

    The request may have run on the server: retry later *with the same key* (``key``)
    to get its answer. ``status`` and ``response`` are the last answer (``None`` when
    the last attempt failed with an error, which is then the ``__cause__``); ``request``
    the request sent. The httpx and requests forms of this error are also those
    libraries' own request errors.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str,
        attempts: int,
        status: int | None = None,
        response: Any = None,
        request: Any = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.attempts = attempts
        self.status = status
        self.response = response
        self.request = request


#: Makes the error a transport raises on giving up (its library's form of it).
Exhausted = Callable[..., RetriesExhausted]


def _statuses(value: Any, where: str) -> frozenset[int]:
    what = "a collection of status codes 401-599, without 400 and 422"
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise bad(where, what, value)
    found = frozenset(value)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in found):
        raise bad(where, what, value)
    if found & NEVER_RETRIED or not all(401 <= s <= 599 for s in found):
        raise bad(where, what, sorted(found))
    return found


@dataclass(init=False, eq=False, slots=True)
class RetryPolicy:
    """The options of the retrying transports; every one validated here, once.

    ``methods``: the methods protected (a key added, retried), default POST and PATCH;
    others pass through untouched, sent once. ``header``: the request header for the key;
    ``replay_header``: the response header marking a replay. ``retry_statuses``: the
    answers that are retried (see the module's rule). ``max_attempts``: attempts in all,
    the first included. ``deadline``: seconds for the whole call (``None``: no limit).
    ``backoff``, ``max_backoff``: the first pause and the longest, in seconds, when the
    server sent no ``Retry-After``. ``should_retry_header``: a response header through
    which the server says ``true`` or ``false`` (``"Stripe-Should-Retry"``), or ``None``.
    ``quote_key``: send the key as the draft's quoted string (``"…"``, default) or bare.
    ``new_key``: mints a key for a call that has none (default: a UUID4).
    """

    methods: frozenset[str]
    header: str
    replay_header: str
    retry_statuses: frozenset[int]
    max_attempts: int
    deadline: float | None
    backoff: float
    max_backoff: float
    should_retry_header: str | None
    quote_key: bool
    new_key: Callable[[], str]

    def __init__(
        self,
        *,
        methods: Collection[str] = ("POST", "PATCH"),
        header: str = "Idempotency-Key",
        replay_header: str = "Idempotent-Replayed",
        retry_statuses: Collection[int] = (409, 500, 502, 503, 504),
        max_attempts: int = 5,
        deadline: float | None = 30.0,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        should_retry_header: str | None = None,
        quote_key: bool = True,
        new_key: Callable[[], str] = new_uuid4,
    ) -> None:
        def where(name: str) -> str:
            return f"RetryPolicy({name}=...)"

        self.methods = method_names(methods, where("methods"))
        self.header = text(header, where("header"))
        self.replay_header = text(replay_header, where("replay_header"))
        self.retry_statuses = _statuses(retry_statuses, where("retry_statuses"))
        self.max_attempts = positive_int(max_attempts, where("max_attempts"))
        self.deadline = None if deadline is None else duration(deadline, where("deadline"))
        self.backoff = duration(backoff, where("backoff"))
        self.max_backoff = duration(max_backoff, where("max_backoff"))
        if self.max_backoff < self.backoff:
            raise bad(where("max_backoff"), f"at least backoff ({self.backoff})", max_backoff)
        self.should_retry_header = (
            None
            if should_retry_header is None
            else text(should_retry_header, where("should_retry_header"))
        )
        self.quote_key = boolean(quote_key, where("quote_key"))
        if not callable(new_key):
            raise bad(where("new_key"), "a callable returning a key", new_key)
        self.new_key = new_key

    def start(self, request: Any, exhausted: Exhausted) -> Flow | None:
        """The logical call of ``request`` (httpx's or requests': its ``method``, ``url``
        and ``headers`` are read) as a :meth:`flow`, or ``None`` when its method is not
        protected (send it once, as it is). The key is the caller's own header, else a new
        one, added to the request's headers. Giving up raises ``exhausted``, given the request."""
        method, url, headers = str(request.method), str(request.url), request.headers
        if method.upper() not in self.methods:
            return None
        exhausted = partial(exhausted, request=request)
        key = headers.get(self.header)
        if key is not None:
            # The caller's key, sent as they wrote it (requests allows bytes); a malformed
            # one is refused before anything is sent, with the answer the server would give.
            key = key.decode("latin-1") if isinstance(key, bytes) else key
            key = parse_key(key, max_length=sys.maxsize, key_format=None)
            return self.flow(method, url, key, exhausted)
        key = self.new_key()
        try:
            if not isinstance(key, str) or key.startswith('"'):
                raise InvalidKey("It must be a string, unquoted (quote_key says how it is sent).")
            parse_key(key, max_length=sys.maxsize, key_format=None)
        except InvalidKey as exc:
            raise InvalidOption(
                f"RetryPolicy(new_key=...) returned {key!r}, not a usable key: {exc.detail}"
            ) from None
        headers[self.header] = quoted(key) if self.quote_key else key
        return self.flow(method, url, key, exhausted)

    def flow(self, method: str, url: str, key: str, exhausted: Exhausted) -> Flow:
        """One logical call carrying ``key``, as steps for :func:`drive` or :func:`adrive`:
        :class:`Send` the request, then return its response that answers the call with its
        :class:`CallInfo`, or :class:`Close` it and :class:`Sleep` before the next attempt,
        or give up with ``exhausted(...)``, the transport's :class:`RetriesExhausted`."""
        ends = None if self.deadline is None else time.monotonic() + self.deadline
        for attempt in itertools.count(1):
            reply = yield Send(None if ends is None else max(0.0, ends - time.monotonic()))
            error = reply if isinstance(reply, Exception) else None
            if error is not None:
                status, wait, outcome = None, None, f"failed ({type(error).__name__}: {error})"
            else:
                status, wait = reply.status_code, retry_after(reply.headers.get("Retry-After"))
                if not self._retried(status, reply.headers, wait):
                    return reply, CallInfo(key, attempt, self._replayed(reply.headers))
                told = "" if wait is None else f" (Retry-After {wait:g} s)"
                outcome = f"answered {status}{told}"
            if wait is None:
                # Equal jitter: at least half the exponential step (so retries do back off),
                # the rest random (so many clients that failed together spread out).
                step = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                wait = step / 2 + random.uniform(0, step / 2)
            why = None
            if attempt >= self.max_attempts:
                why = f"{self.max_attempts} attempts made"
            elif ends is not None and wait >= ends - time.monotonic():
                why = f"waiting {wait:g} s would pass the {self.deadline:g} s deadline"
            head = f"{method} {url}: attempt {attempt} {outcome}"
            extra = {"idempotency_key": key, "attempt": attempt, "status": status}
            if why is not None:
                message = (
                    f"{head}; gave up: {why}. Every attempt carried {self.header} {key!r}; "
                    "retry with that key to get the answer (a server running "
                    "django-idempotency shows its record: manage.py idempotency_inspect "
                    f"show {key})"
                )
                logger.warning("%s", message, extra=extra)
                if error is None:  # the caller may read the last answer's body
                    yield Close(reply, read=True)
                response = None if error else reply
                raise exhausted(
                    message, key=key, attempts=attempt, status=status, response=response
                ) from error
            retrying = "%s; retrying in %.2f s with the same %s %r"
            logger.info(retrying, head, wait, self.header, key, extra=extra)
            if error is None:
                yield Close(reply)
            yield Sleep(wait)

    def _replayed(self, headers: Mapping[str, str]) -> bool:
        return headers.get(self.replay_header, "").strip().lower() == "true"

    def _retried(self, status: int, headers: Mapping[str, str], wait: float | None) -> bool:
        """Whether an answer is one to send the request again for (the module's rule)."""
        if self._replayed(headers):
            return False  # the stored answer: another attempt would get it again
        said = None
        if self.should_retry_header is not None:
            said = headers.get(self.should_retry_header, "").strip().lower() or None
        if said == "false" or status in NEVER_RETRIED:
            return False
        retried = status in self.retry_statuses and (status >= 500 or wait is not None)
        return said == "true" or retried


@dataclass(frozen=True, slots=True)
class Send:
    """Send the request, its timeouts cut to ``left`` seconds (``None``: as they are).
    Sends back the response, or the error after which it may not have arrived."""

    left: float | None


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``response``, not the call's answer (``read``: read its body first)."""

    response: Any
    read: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause ``seconds`` before the next attempt."""

    seconds: float


#: What a flow asks its driver to do.
Step: TypeAlias = Send | Close | Sleep
#: One logical call: yields steps, is sent what each came to, returns (response, CallInfo).
Flow: TypeAlias = Generator[Step, Any, Any]


def _resume(flow: Flow, reply: Any) -> Any:
    """The flow's next step, sent ``reply``; or, once it has returned, its answer."""
    try:
        return flow.send(reply)
    except StopIteration as done:
        return done.value


def _perform(step: Step, send: Callable[..., Any], close: Callable[..., Any], sleep: Any) -> Any:
    """Do ``step`` with a driver's I/O: what it came to, or the awaitable that gives it."""
    if isinstance(step, Send):
        return send(step.left)
    if isinstance(step, Close):
        return close(step.response, step.read)
    return sleep(step.seconds)


def drive(
    flow: Flow,
    send: Callable[[float | None], R | Exception],
    close: Callable[[R, bool], None],
) -> tuple[R, CallInfo]:
    """Run ``flow`` with blocking I/O: ``send(left)`` sends the request once, ``close(response,
    read)`` closes one; pauses sleep the thread. Returns the answer and its :class:`CallInfo`."""
    step = _resume(flow, None)
    while isinstance(step, Step):  # the flow's answer is a tuple, never a step
        step = _resume(flow, _perform(step, send, close, time.sleep))
    return cast("tuple[R, CallInfo]", step)


async def adrive(
    flow: Flow,
    send: Callable[[float | None], Awaitable[R | Exception]],
    close: Callable[[R, bool], Awaitable[None]],
    sleep: Callable[[float], Awaitable[None]],
) -> tuple[R, CallInfo]:
    """:func:`drive`, awaiting each step (``sleep``: the event loop's)."""
    step = _resume(flow, None)
    while isinstance(step, Step):
        step = _resume(flow, await _perform(step, send, close, sleep))
    return cast("tuple[R, CallInfo]", step)
