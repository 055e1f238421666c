"""IdempotencyService: every rule of the behaviour contract lives here.

The doors (middleware, decorator, DRF mixin) and :func:`run` only translate
between their world and the four operations below:

``acquire``  claim a key or learn its stored outcome, waiting for a concurrent
             owner when the policy says so (claim script + BLMOVE per wait);
``run``      the plain-Python lifecycle (``arun`` for coroutines);
``begin``    the HTTP lifecycle up to running the view: method, key, scope,
             fingerprint, claim, replay or problem;
``finish``   the HTTP lifecycle after the view: store or release, after the
             database transaction commits when one is open.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from django.db import connections, transaction
from django.http import HttpResponse, HttpResponseBase

from . import signals
from .conf import IdempotencySettings, get_settings, on_reload
from .exceptions import (
    FingerprintMismatch,
    IdempotencyError,
    IdempotencyTimeout,
    IdempotencyUnavailable,
    KeyRequired,
    NotReplayable,
    RequestInProgress,
    ResultNotStored,
)
from .http import decode_response, encode_response, parse_key, problem_response, rendered
from .lease import Lease, get_keeper
from .store import (
    DONE,
    ERROR,
    HTTP_DOOR,
    RUN_DOOR,
    UNREPLAYABLE,
    Record,
    RedisError,
    RedisFull,
    RedisStore,
    Slot,
    connect,
    now_ms,
)

logger = logging.getLogger("django_idempotency")

T = TypeVar("T")

# Async doors run the blocking Redis work (claims, and waits that may block for
# WAIT_TIMEOUT) here. The event loop's default executor has only a few threads, so
# waiting duplicates there would starve the owner's own completion.
_blocking_pool = ThreadPoolExecutor(max_workers=512, thread_name_prefix="idempotency")


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    """Run blocking ``func(*args)`` in the app's own thread pool and await it."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_blocking_pool, functools.partial(func, *args))


#: Waiters re-check a running record at least this often (seconds), so a lease that
#: expires under them (crashed owner) is noticed without a wake-up.
_MIN_RECHECK = 0.05
#: How long a completed record's wake copy lives: it only has to bridge a waiter's
#: claim and its BLMOVE, and it costs a second copy of the record meanwhile.
_WAKE_MS = 2000


class _Tokens:
    """Fencing tokens: unique per claim across processes, without a syscall each.

    A random per-process prefix (drawn again in a forked child) plus a counter;
    ``os.urandom`` per claim cost more than the rest of the claim's Python work.
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = secrets.token_hex(6)
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_new_token = _Tokens()


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


@dataclass(frozen=True)
class Policy:
    """The options one door applies: settings merged with per-view overrides."""

    ttl: float
    lock_ttl: float
    wait_timeout: float
    conflict: str
    methods: frozenset[str]
    required: bool
    scope: Callable[..., str]
    fingerprint: Callable[..., str]


@dataclass
class Ticket:
    """A claimed HTTP request: the view may run; ``finish`` or ``abort`` must follow."""

    lease: Lease
    scope: str
    key: str
    request: Any
    policy: Policy
    settled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Begin:
    """What ``begin`` decided: answer with ``response``, or run the view under ``ticket``.

    Both ``None`` means the request is not covered: run the view unprotected.
    """

    response: HttpResponse | None = None
    ticket: Ticket | None = None


PASS = Begin()


class IdempotencyService:
    """Redis-backed idempotency: claims, waits, replays, stores and releases."""

    def __init__(self, settings: IdempotencySettings, store: RedisStore | None = None) -> None:
        self.settings = settings
        self._store = store
        self._policies: dict[tuple[tuple[str, Any], ...], Policy] = {}

    @property
    def store(self) -> RedisStore:
        """The Redis store, connected on first use (so importing never needs Redis)."""
        if self._store is None:
            self._store = RedisStore(connect(self.settings.REDIS), self.settings.KEY_PREFIX)
        return self._store

    def policy(self, **overrides: Any) -> Policy:
        """The settings with non-``None`` per-view ``overrides`` applied (cached)."""
        items = tuple(sorted((k, v) for k, v in overrides.items() if v is not None))
        cached = self._policies.get(items)
        if cached is None:
            s = self.settings
            base = Policy(
                ttl=s.TTL,
                lock_ttl=s.LOCK_TTL,
                wait_timeout=s.WAIT_TIMEOUT,
                conflict=s.CONFLICT,
                methods=s.METHODS,
                required=s.REQUIRED,
                scope=s.SCOPE,
                fingerprint=s.FINGERPRINT,
            )
            cached = self._policies[items] = replace(base, **dict(items))
        return cached

    # -- the claim -----------------------------------------------------------------------

    def acquire(
        self,
        slot: Slot,
        fingerprint: str,
        *,
        lock_ttl: float,
        wait_timeout: float,
        conflict: str = "wait",
    ) -> Lease | Record:
        """Claim ``slot`` (returning a held :class:`Lease`) or return its stored record.

        A concurrent owner is waited for (up to ``wait_timeout``) unless ``conflict``
        is ``"reject"``. Raises :class:`FingerprintMismatch`, :class:`RequestInProgress`
        or :class:`IdempotencyTimeout`; Redis errors propagate as ``RedisError``.
        """
        token = _new_token()
        lease_ms = _ms(lock_ttl)
        deadline = time.monotonic() + wait_timeout
        lease_checked = False
        while True:
            created = now_ms()
            claim = self.store.claim(slot, token, fingerprint, lease_ms, created)
            if claim.outcome == "claimed":
                lease = Lease(
                    self.store,
                    slot,
                    token,
                    lease_ms,
                    fingerprint=fingerprint,
                    created_ms=created,
                    on_lost=self._lease_lost,
                )
                return get_keeper().hold(lease)
            if claim.outcome == "stored":
                assert claim.record is not None
                return claim.record
            if claim.outcome == "mismatch":
                raise FingerprintMismatch(
                    "This key was already used with a different request "
                    "(method, path, query string or body)."
                )
            left = deadline - time.monotonic()
            retry_after = max(1, -(-claim.lease_left_ms // 1000))
            if conflict == "reject":
                raise RequestInProgress(
                    "A request with this key is still being processed; retry later.",
                    retry_after=retry_after,
                )
            if left <= 0:
                raise IdempotencyTimeout(
                    f"The first request with this key did not finish within {wait_timeout:g} s.",
                    retry_after=retry_after,
                )
            # The first wait ends when the owner's lease would run out, so an owner that
            # crashed is noticed; an owner seen renewing is trusted until the deadline.
            # That bounds a waiter to four commands however short LOCK_TTL is.
            block = left
            if not lease_checked:
                lease_checked = True
                block = min(left, max(claim.lease_left_ms / 1000, _MIN_RECHECK))
            woken = self.store.wait(slot, block)
            if isinstance(woken, Record):
                return woken

    def _lease_lost(self, lease: Lease) -> None:
        # Both the keeper (on a failed renewal) and a failed completion report it: once.
        if lease.reported_lost:
            return
        lease.reported_lost = True
        _signal(signals.lease_lost, lease.slot.scope, lease.slot.key)

    def _complete(self, lease: Lease, state: str, payload: bytes, ttl: float) -> None:
        """Write the final record; raise :class:`ResultNotStored` when it could not be."""
        get_keeper().drop(lease)
        header = lease.slot.header(state, "-", lease.fingerprint, lease.created_ms, now_ms())
        try:
            stored = self.store.complete(
                lease.slot, lease.token, header + payload, _ms(ttl), min(lease.lease_ms, _WAKE_MS)
            )
        except RedisError as exc:
            raise ResultNotStored(f"Redis failed while storing the result: {exc}") from exc
        if not stored:
            self._lease_lost(lease)
            raise ResultNotStored(
                "The lease was lost before the result was stored; "
                "another caller may run the action again."
            )

    def _release(self, lease: Lease) -> None:
        get_keeper().drop(lease)
        try:
            self.store.release(lease.slot, lease.token, lease.lease_ms)
        except RedisError:
            # The lease expires on its own; until then retries wait or get 409.
            logger.warning(
                "could not release idempotency key %s", lease.slot.record_key, exc_info=True
            )

    def _unavailable(self, exc: BaseException) -> IdempotencyUnavailable:
        return IdempotencyUnavailable(f"The idempotency store (Redis) is unavailable: {exc}")

    # -- plain Python --------------------------------------------------------------------

    def run(self, key: str | bytes, action: Callable[[], T], **options: Any) -> T:
        """Run ``action`` once per ``key``; see :func:`django_idempotency.run`."""
        opts = RunOptions.build(self.settings, **options)
        got = self._run_begin(key, opts)
        if isinstance(got, _Replay):
            return got.resolve()  # type: ignore[no-any-return]
        try:
            value = action()
        except BaseException as exc:
            self._run_failed(key, got, opts, exc)
            raise
        return self._run_succeeded(key, got, opts, value)

    async def arun(self, key: str | bytes, action: Callable[[], Awaitable[T]], **options: Any) -> T:
        """Async form of :meth:`run`: ``action`` returns an awaitable."""
        opts = RunOptions.build(self.settings, **options)
        got = await in_thread(self._run_begin, key, opts)
        if isinstance(got, _Replay):
            return got.resolve()  # type: ignore[no-any-return]
        try:
            value = await action()
        except BaseException as exc:
            await in_thread(self._run_failed, key, got, opts, exc)
            raise
        return await in_thread(self._run_succeeded, key, got, opts, value)

    def _run_begin(self, key: str | bytes, opts: RunOptions) -> Lease | _Replay | None:
        """A held lease, ``None`` (fail-open: run unprotected) or a replay."""
        if not isinstance(key, (str, bytes)) or not key:
            raise TypeError("run() needs a non-empty str or bytes key")
        slot = self.store.slot(RUN_DOOR, opts.namespace, key)
        try:
            got = self.acquire(slot, "", lock_ttl=opts.lock_ttl, wait_timeout=opts.wait_timeout)
        except RedisError as exc:
            if self.settings.fail_open:
                logger.warning("Redis unavailable, running %r without idempotency: %s", key, exc)
                return None
            raise self._unavailable(exc) from exc
        if isinstance(got, Lease):
            return got
        return _Replay(key, got, opts)

    def _run_failed(
        self, key: str | bytes, lease: Lease | None, opts: RunOptions, exc: BaseException
    ) -> None:
        if lease is None:
            return
        # KeyboardInterrupt, cancellation and friends are not outcomes of the action.
        if not isinstance(exc, Exception) or (
            opts.should_ignore_error is not None and opts.should_ignore_error(exc)
        ):
            self._release(lease)
            return
        try:
            self._complete(lease, ERROR, opts.error_serializer.dumps(exc), opts.ttl)
        except ResultNotStored as critical:
            critical.error = exc
            raise critical from exc
        _signal(signals.executed, opts.namespace, key, state=ERROR)
        if opts.on_action_error is not None:
            opts.on_action_error(key, exc)

    def _run_succeeded(
        self, key: str | bytes, lease: Lease | None, opts: RunOptions, value: T
    ) -> T:
        if lease is None:
            return value
        try:
            payload = opts.value_serializer.dumps(value)
        except (TypeError, ValueError) as exc:
            # Never run twice: remember that this key ran, even though we cannot replay it.
            reason = f"The result of type {type(value).__name__} could not be serialized: {exc}"
            self._complete(lease, UNREPLAYABLE, reason.encode(), opts.ttl)
            raise ResultNotStored(reason, value=value) from exc
        try:
            self._complete(lease, DONE, payload, opts.ttl)
        except ResultNotStored as critical:
            critical.value = value
            raise
        _signal(signals.executed, opts.namespace, key, state=DONE)
        if opts.on_action_success is not None:
            opts.on_action_success(key, value)
        return value

    # -- HTTP ----------------------------------------------------------------------------

    def begin(self, request: Any, policy: Policy) -> Begin:
        """Everything before the view runs: see SPEC §2 steps 1-6.

        ``request`` is a Django ``HttpRequest`` or a DRF ``Request`` (whose ``user``
        DRF has authenticated).
        """
        if request.method not in policy.methods:
            return PASS
        # META directly: request.headers builds a dict of every header on first use.
        raw = request.META.get(self.settings.header_meta_key)
        if raw is None:
            if not policy.required:
                return PASS
            return Begin(
                response=problem_response(
                    KeyRequired(f"This endpoint requires an {self.settings.HEADER} header.")
                )
            )
        scope = key = ""
        try:
            key = parse_key(
                raw,
                max_length=self.settings.MAX_KEY_LENGTH,
                key_format=self.settings.KEY_FORMAT,
            )
            scope = str(policy.scope(request))
            slot = self.store.slot(HTTP_DOOR, scope, key)
            got = self.acquire(
                slot,
                str(policy.fingerprint(request)),
                lock_ttl=policy.lock_ttl,
                wait_timeout=policy.wait_timeout,
                conflict=policy.conflict,
            )
        except FingerprintMismatch as exc:
            _signal(signals.mismatch, scope, key, request=request)
            return Begin(response=problem_response(exc))
        except RequestInProgress as exc:
            _signal(signals.conflict, scope, key, request=request)
            return Begin(response=problem_response(exc))
        except IdempotencyError as exc:
            return Begin(response=problem_response(exc))
        except RedisError as exc:
            if self.settings.fail_open:
                logger.warning(
                    "Redis unavailable, serving %s %s without idempotency: %s",
                    request.method,
                    request.path,
                    exc,
                )
                return PASS
            logger.error("Redis unavailable, refusing %s %s: %s", request.method, request.path, exc)
            # Clients learn that the store is down, not the server's addresses or errors.
            detail = (
                "The idempotency store is full (Redis is at maxmemory); retry later."
                if isinstance(exc, RedisFull)
                else "The idempotency store is unavailable; retry later."
            )
            return Begin(response=problem_response(IdempotencyUnavailable(detail)))
        if isinstance(got, Record):
            _signal(signals.replayed, scope, key, request=request)
            return Begin(response=self._replay_response(got))
        return Begin(ticket=Ticket(got, scope, key, request, policy))

    def _replay_response(self, record: Record) -> HttpResponse:
        if record.state == UNREPLAYABLE:
            return problem_response(
                NotReplayable(
                    "The first request with this key was processed, but its response cannot be "
                    f"replayed: {record.payload.decode('utf-8', 'replace')}"
                )
            )
        return decode_response(record.payload, self.settings.REPLAY_HEADER)

    def finish(self, ticket: Ticket, response: HttpResponseBase) -> HttpResponseBase:
        """Everything after the view returned: store or release (SPEC §2 steps 8-10).

        Inside a database transaction the outcome is stored only once it commits, and
        the key is released if the response is closed without a commit (rollback).
        """
        aliases = _open_transactions()
        if not aliases:
            self.settle(ticket, response)
            return response
        waiting = set(aliases)

        def committed(alias: str) -> None:
            waiting.discard(alias)
            if not waiting:
                self.settle(ticket, response)

        for alias in aliases:
            transaction.on_commit(lambda alias=alias: committed(alias), using=alias)  # type: ignore[misc]
        # Django calls these when the server closes the response: after the outermost
        # atomic block has committed or rolled back.
        response._resource_closers.append(lambda: self.abort(ticket))  # type: ignore[attr-defined]
        return response

    def abort(self, ticket: Ticket) -> None:
        """The view raised (or its transaction rolled back): release the key for a retry."""
        with ticket.lock:
            if ticket.settled:
                return
            ticket.settled = True
        self._release(ticket.lease)

    def settle(self, ticket: Ticket, response: HttpResponseBase) -> None:
        """Store the view's response for replays, or release the key (5xx); once per ticket."""
        with ticket.lock:
            if ticket.settled:
                return
            ticket.settled = True
        lease, policy = ticket.lease, ticket.policy
        if response.status_code >= 500 and not self.settings.STORE_SERVER_ERRORS:
            self._release(lease)
            return
        if response.streaming:
            state, payload = UNREPLAYABLE, b"it was a streaming response."
        else:
            assert isinstance(response, HttpResponse)
            rendered(response)
            if len(response.content) > self.settings.MAX_BODY_BYTES:
                state = UNREPLAYABLE
                payload = (
                    f"its body was larger than {self.settings.MAX_BODY_BYTES} bytes."
                ).encode()
            else:
                state, payload = DONE, encode_response(response)
        try:
            self._complete(lease, state, payload, policy.ttl)
        except ResultNotStored as critical:
            # The client still gets the true response; only later replays are at risk.
            logger.critical("response for idempotency key %r not stored: %s", ticket.key, critical)
            return
        _signal(signals.executed, ticket.scope, ticket.key, request=ticket.request, state=state)


@dataclass(frozen=True)
class RunOptions:
    """The options of one :func:`run` call, defaults filled from settings."""

    namespace: str
    ttl: float
    lock_ttl: float
    wait_timeout: float
    should_ignore_error: Callable[[BaseException], bool] | None
    value_serializer: Any
    error_serializer: Any
    on_action_success: Callable[[Any, Any], None] | None
    on_action_error: Callable[[Any, BaseException], None] | None
    on_success_replay: Callable[[Any, Any], None] | None
    on_error_replay: Callable[[Any, BaseException], None] | None

    @classmethod
    def build(
        cls,
        settings: IdempotencySettings,
        *,
        namespace: str = "",
        ttl: float | None = None,
        lock_ttl: float | None = None,
        wait_timeout: float | None = None,
        should_ignore_error: Callable[[BaseException], bool] | None = None,
        value_serializer: Any = None,
        error_serializer: Any = None,
        on_action_success: Callable[[Any, Any], None] | None = None,
        on_action_error: Callable[[Any, BaseException], None] | None = None,
        on_success_replay: Callable[[Any, Any], None] | None = None,
        on_error_replay: Callable[[Any, BaseException], None] | None = None,
    ) -> RunOptions:
        """Validate the call's options; ``None`` means the setting's default."""
        return cls(
            namespace=namespace,
            ttl=settings.TTL if ttl is None else _positive("ttl", ttl),
            lock_ttl=settings.LOCK_TTL if lock_ttl is None else _positive("lock_ttl", lock_ttl),
            wait_timeout=(
                settings.WAIT_TIMEOUT
                if wait_timeout is None
                else _positive("wait_timeout", wait_timeout)
            ),
            should_ignore_error=should_ignore_error,
            value_serializer=value_serializer or settings.VALUE_SERIALIZER,
            error_serializer=error_serializer or settings.ERROR_SERIALIZER,
            on_action_success=on_action_success,
            on_action_error=on_action_error,
            on_success_replay=on_success_replay,
            on_error_replay=on_error_replay,
        )


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Replay:
    key: str | bytes
    record: Record
    opts: RunOptions

    def resolve(self) -> Any:
        record, opts = self.record, self.opts
        _signal(signals.replayed, opts.namespace, self.key)
        if record.state == DONE:
            value = opts.value_serializer.loads(record.payload)
            if opts.on_success_replay is not None:
                opts.on_success_replay(self.key, value)
            return value
        if record.state == ERROR:
            error = opts.error_serializer.loads(record.payload)
            if opts.on_error_replay is not None:
                opts.on_error_replay(self.key, error)
            raise error
        raise NotReplayable(
            "The action ran for this key, but its result cannot be replayed: "
            + record.payload.decode("utf-8", "replace")
        )


def _signal(
    signal: Any, scope: str | bytes, key: str | bytes, request: Any = None, **extra: Any
) -> None:
    if signal.receivers:
        signal.send(sender=IdempotencyService, scope=scope, key=key, request=request, **extra)


def _open_transactions() -> list[str]:
    """Database aliases inside an atomic block opened by the app (not by a TestCase)."""
    return [
        conn.alias
        for conn in connections.all(initialized_only=True)
        if conn.in_atomic_block
        and not all(getattr(block, "_from_testcase", False) for block in conn.atomic_blocks)
    ]


_service: IdempotencyService | None = None
_service_lock = threading.Lock()


def get_service() -> IdempotencyService:
    """The process-wide service for the current settings."""
    global _service
    service = _service
    if service is None:
        with _service_lock:
            if _service is None:
                _service = IdempotencyService(get_settings())
            service = _service
    return service


@on_reload
def _reset_service() -> None:
    global _service
    _service = None
