"""When a call that carries an idempotency key is sent again: the one rule every transport
shares (the httpx transports and the requests adapter only perform it).

One *logical call* gets one key, minted here (a UUID4) unless the caller set one, and
keeps it for every attempt. After each attempt, :class:`Attempts` decides:

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
import logging
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..exceptions import InvalidKey
from ..http import parse_key
from ..options import InvalidOption, bad, boolean, duration, positive_int, text
from ..options import methods as method_names

logger = logging.getLogger("django_idempotency.client")

_DELTA_SECONDS = re.compile(r"[0-9]+")

#: Answers the same request with the same key can only get again.
NEVER_RETRIED = frozenset({400, 422})


def new_uuid4() -> str:
    """A random UUID4, the default key of a logical call."""
    return str(uuid.uuid4())


def quoted(key: str) -> str:
    """``key`` as a Structured Field String, the header form the IETF draft specifies."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delta-seconds or an HTTP-date), or
    ``None`` when it is absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; a date without a zone is read as such
        when = when.replace(tzinfo=timezone.utc)
    current = datetime.now(timezone.utc).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


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
    the last attempt failed with an error, which is then the ``__cause__``). The httpx
    and requests forms of this error are also those libraries' own request errors.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str,
        attempts: int,
        status: int | None = None,
        response: Any = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.attempts = attempts
        self.status = status
        self.response = response


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

    __slots__ = (
        "backoff",
        "deadline",
        "header",
        "max_attempts",
        "max_backoff",
        "methods",
        "new_key",
        "quote_key",
        "replay_header",
        "retry_statuses",
        "should_retry_header",
    )

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

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.__slots__))
        return f"RetryPolicy({fields})"

    def start(
        self, method: str, url: str, sent_key: str | None, exhausted: Exhausted
    ) -> Attempts | None:
        """A logical call of ``method`` to ``url``, or ``None`` when the method is not
        protected (send it once, as it is). ``sent_key``: the caller's own header value."""
        if method.upper() not in self.methods:
            return None
        if sent_key is not None:
            # The caller's key, sent as they wrote it; a malformed one is refused before
            # anything is sent, with the answer the server would give.
            key = parse_key(sent_key, max_length=sys.maxsize, key_format=None)
            return Attempts(self, method, url, key, None, exhausted)
        key = self.new_key()
        try:
            if not isinstance(key, str) or key.startswith('"'):
                raise InvalidKey("It must be a string, unquoted (quote_key says how it is sent).")
            parse_key(key, max_length=sys.maxsize, key_format=None)
        except InvalidKey as exc:
            raise InvalidOption(
                f"RetryPolicy(new_key=...) returned {key!r}, not a usable key: {exc.detail}"
            ) from None
        return Attempts(self, method, url, key, quoted(key) if self.quote_key else key, exhausted)


class Attempts:
    """One logical call: its key, the attempts sent so far, and what comes next."""

    __slots__ = (
        "_exhausted",
        "_started",
        "count",
        "header_value",
        "key",
        "method",
        "policy",
        "url",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        method: str,
        url: str,
        key: str,
        header_value: str | None,
        exhausted: Exhausted,
    ) -> None:
        self.policy = policy
        self.method = method
        self.url = url
        #: The key every attempt carries.
        self.key = key
        #: The header value to add to the request; ``None``: the caller set it.
        self.header_value = header_value
        self.count = 0
        self._started: float | None = None
        self._exhausted = exhausted

    def sending(self) -> float | None:
        """Count an attempt about to be sent; the seconds left of the deadline (``None``:
        no deadline), to which the transport cuts the attempt's timeouts."""
        now = time.monotonic()
        if self._started is None:
            self._started = now
        self.count += 1
        if self.policy.deadline is None:
            return None
        return max(0.0, self._started + self.policy.deadline - now)

    def after_response(
        self, status: int, headers: Mapping[str, str], response: Any
    ) -> float | None:
        """``None``: ``response`` is the call's answer. Otherwise the seconds to pause
        before sending the request again (or :class:`RetriesExhausted`, carrying it)."""
        policy = self.policy
        if self._replayed(headers):
            return None  # the stored answer: another attempt would get it again
        wait = retry_after(headers.get("Retry-After"))
        said = None
        if policy.should_retry_header is not None:
            said = headers.get(policy.should_retry_header, "").strip().lower() or None
        if said == "false" or status in NEVER_RETRIED:
            return None
        if said != "true" and (
            status not in policy.retry_statuses or (status < 500 and wait is None)
        ):
            return None
        outcome = f"answered {status}" + ("" if wait is None else f" (Retry-After {wait:g} s)")
        return self._pause(outcome, wait, status=status, response=response)

    def after_error(self, error: Exception) -> float:
        """The seconds to pause after ``error`` (one the transport knows may have left the
        request unsent or its answer lost), or :class:`RetriesExhausted` from it."""
        return self._pause(f"failed ({type(error).__name__}: {error})", None, error=error)

    def info(self, headers: Mapping[str, str]) -> CallInfo:
        """What the call came to, for the response that answered it."""
        return CallInfo(self.key, self.count, self._replayed(headers))

    def _replayed(self, headers: Mapping[str, str]) -> bool:
        return headers.get(self.policy.replay_header, "").strip().lower() == "true"

    def _pause(
        self,
        outcome: str,
        wait: float | None,
        *,
        status: int | None = None,
        response: Any = None,
        error: Exception | None = None,
    ) -> float:
        policy = self.policy
        if wait is None:
            # Equal jitter: at least half the exponential step (so retries do back off),
            # the rest random (so many clients that failed together spread out).
            step = min(policy.max_backoff, policy.backoff * 2 ** (self.count - 1))
            wait = step / 2 + random.uniform(0, step / 2)
        why = None
        if self.count >= policy.max_attempts:
            why = f"{policy.max_attempts} attempts made"
        elif policy.deadline is not None:
            assert self._started is not None
            left = self._started + policy.deadline - time.monotonic()
            if wait >= left:
                why = f"waiting {wait:g} s would pass the {policy.deadline:g} s deadline"
        head = f"{self.method} {self.url}: attempt {self.count} {outcome}"
        if why is None:
            logger.info(
                "%s; retrying in %.2f s with the same %s %r",
                head,
                wait,
                policy.header,
                self.key,
                extra={"idempotency_key": self.key, "attempt": self.count, "status": status},
            )
            return wait
        message = (
            f"{head}; gave up: {why}. Every attempt carried {policy.header} {self.key!r}; "
            "retry with that key to get the answer (a server running django-idempotency "
            f"shows its record: manage.py idempotency_inspect show {self.key})"
        )
        logger.warning(
            "%s",
            message,
            extra={"idempotency_key": self.key, "attempt": self.count, "status": status},
        )
        raise self._exhausted(
            message, key=self.key, attempts=self.count, status=status, response=response
        ) from error
