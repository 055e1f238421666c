"""Every outcome, once: signals, structured log records, and metrics or traces hang off here.

The lifecycles (:mod:`.flows`) report what became of each request or call with
:func:`emit` exactly once (``executed``, ``replayed``, ``waited``, ``conflict``, ...), and
the engine reports what happens along the way (``lease_lost``, ``not_stored``,
``integrity_failed``). :func:`emit` sends the matching Django signal, logs with the event's
fields as ``extra`` (``idempotency_outcome``, ``idempotency_door``, ...), and hands the
:class:`Event` to every installed :class:`Observer`, which is how the Prometheus and
OpenTelemetry integrations count and trace without the engine knowing them.

Traces: an observer that is also a :class:`Tracer` gets one trace per protected request
or call. The flows :func:`open_trace` it once the request is covered and make it current
with :func:`active` around the claim, the action (where the door wraps it) and the store,
so the ``claim``, ``wait`` and ``store`` spans of :func:`span` nest under it. The first
final outcome :func:`emit` reports while it is current ends it (every outcome but
``lease_lost``, which happens *during* a request); a refusal before any trace was opened
(a missing or malformed key) gets a trace of its own that ends at once.

With no observer, no signal receiver and the logger quiet, :func:`emit` returns before
building anything: the hot path pays a few attribute reads.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from . import signals

logger = logging.getLogger("django_idempotency")


class Label(str, Enum):
    """A string enum that prints as its value (in logs, metric labels and the admin)."""

    def __str__(self) -> str:
        return str(self.value)


class Outcome(Label):
    """What became of a protected request or call (or what happened to it on the way)."""

    EXECUTED = "executed"
    RELEASED = "released"
    REPLAYED = "replayed"
    WAITED = "waited"
    CONFLICT = "conflict"
    WAIT_TIMEOUT = "wait_timeout"
    MISMATCH = "mismatch"
    INVALID_KEY = "invalid_key"
    KEY_REQUIRED = "key_required"
    NOT_REPLAYABLE = "not_replayable"
    UNAVAILABLE = "unavailable"
    FAIL_OPEN = "fail_open"
    NOT_STORED = "not_stored"
    LEASE_LOST = "lease_lost"
    INTEGRITY_FAILED = "integrity_failed"
    #: A retry found its key's owner dead without an outcome, under the refuse policy.
    OUTCOME_UNKNOWN = "outcome_unknown"


class Door(Label):
    """Which door a request or call came through."""

    MIDDLEWARE = "middleware"
    DECORATOR = "decorator"
    DRF = "drf"
    RUN = "run"
    CELERY = "celery"
    TASKS = "tasks"
    #: ``django_idempotency.edge``: a replay answered before Django's stack runs.
    EDGE = "edge"


class StoreOp(Label):
    """The store operations whose duration is measured."""

    CLAIM = "claim"
    COMPLETE = "complete"
    RELEASE = "release"
    RENEW = "renew"
    #: A plain read of a record (the edge looks before Django runs; it never claims).
    READ = "read"


@dataclass(frozen=True, slots=True)
class Event:
    """One outcome with its context. ``key`` is the client's raw key: never a metric label."""

    outcome: Outcome
    door: Door
    scope: str | bytes
    key: str | bytes
    #: Seconds from the start of the request or call to this outcome (``None``: unknown).
    duration: float | None = None
    #: Seconds spent waiting for a concurrent owner, for ``waited`` and ``wait_timeout``.
    wait: float | None = None
    request: Any = None
    #: For ``executed``: the stored state (``done``, ``error``, ``unreplayable``).
    state: str | None = None
    detail: str = ""


class Observer(Protocol):
    """Receives every event and store timing; installed with :func:`install`."""

    def event(self, event: Event) -> None:
        """Count, export or record ``event``."""

    def store_op(self, op: StoreOp, seconds: float) -> None:
        """One store operation took ``seconds``."""

    def span(self, name: str, door: Door | None) -> contextlib.AbstractContextManager[Any]:
        """A trace span around part of a request (``request``, ``claim``, ``wait``, ``store``)."""


class Tracer(Observer, Protocol):
    """An observer that also traces each protected request or call as a whole."""

    def open(self, door: Door) -> Any:
        """Start the trace of one request or call; return its handle (not yet current)."""

    def activate(self, handle: Any) -> contextlib.AbstractContextManager[Any]:
        """Make ``handle`` current (child spans nest under it) without ending it."""

    def close(self, handle: Any, event: Event | None, error: BaseException | None) -> None:
        """End ``handle`` with its final ``event`` (``None``: it ended without one)."""


@dataclass(eq=False, slots=True)
class Trace:
    """The trace of one request or call, one handle per tracing observer."""

    handles: tuple[tuple[Tracer, Any], ...]
    ended: bool = field(default=False)

    def end(self, event: Event | None, error: BaseException | None = None) -> None:
        """End it once (later calls do nothing)."""
        if self.ended:
            return
        self.ended = True
        for tracer, handle in self.handles:
            tracer.close(handle, event, error)


_NULL: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
_observers: list[Observer] = []
_tracers: list[Tracer] = []
_trace: ContextVar[Trace | None] = ContextVar("idempotency_trace", default=None)


def _is_tracer(observer: Observer) -> bool:
    return all(callable(getattr(observer, name, None)) for name in ("open", "activate", "close"))


def install(observer: Observer) -> Observer:
    """Add ``observer`` (idempotent per instance)."""
    if observer not in _observers:
        _observers.append(observer)
        if _is_tracer(observer):
            _tracers.append(observer)  # type: ignore[arg-type]
    return observer


def uninstall(observer: Observer) -> None:
    """Remove ``observer``."""
    if observer in _observers:
        _observers.remove(observer)
    if observer in _tracers:
        _tracers.remove(observer)


def open_trace(door: Door) -> Trace | None:
    """A new trace for a request or call through ``door`` (``None`` without a tracer)."""
    if not _tracers:
        return None
    return Trace(tuple((tracer, tracer.open(door)) for tracer in _tracers))


@contextlib.contextmanager
def _activated(trace: Trace, last: bool, end_on_error: bool) -> Iterator[Trace]:
    token = _trace.set(trace)
    try:
        with contextlib.ExitStack() as stack:
            for tracer, handle in trace.handles:
                stack.enter_context(tracer.activate(handle))
            yield trace
    except BaseException as exc:
        if end_on_error or last:
            trace.end(None, exc)
        raise
    finally:
        _trace.reset(token)
        if last:
            trace.end(None)


def active(
    trace: Trace | None, *, last: bool = False, end_on_error: bool = True
) -> contextlib.AbstractContextManager[Trace | None]:
    """Make ``trace`` current. ``last``: end it on the way out; an exception ends it too,
    unless ``end_on_error`` is false (the caller's error handling reports the outcome)."""
    if trace is None:
        return _NULL
    return _activated(trace, last, end_on_error)


def traced(door: Door) -> contextlib.AbstractContextManager[Trace | None]:
    """A trace around a whole call through ``door``, current inside and ended on exit."""
    trace = open_trace(door)
    return _NULL if trace is None else _activated(trace, True, True)


_from_settings: tuple[Observer, ...] = ()


def configure(observers: tuple[Observer, ...]) -> None:
    """Install the ``IDEMPOTENCY["OBSERVERS"]`` in place of the ones installed before."""
    global _from_settings
    for observer in _from_settings:
        uninstall(observer)
    _from_settings = tuple(observers)
    for observer in _from_settings:
        install(observer)


_KEYED = "idempotency key %r (scope %r): "
#: Each outcome's signal, log level and log message (after "idempotency key ... (scope ...): ").
_REPORTS: dict[Outcome, tuple[Any, int, str]] = {
    Outcome.EXECUTED: (signals.executed, logging.DEBUG, "executed, stored as %s"),
    Outcome.RELEASED: (signals.released, logging.DEBUG, "executed, not stored; key released"),
    Outcome.REPLAYED: (signals.replayed, logging.DEBUG, "replayed"),
    Outcome.WAITED: (signals.replayed, logging.DEBUG, "replayed after waiting %.3f s"),
    Outcome.CONFLICT: (signals.conflict, logging.INFO, "refused, still in progress"),
    Outcome.WAIT_TIMEOUT: (signals.wait_timeout, logging.WARNING, "gave up waiting after %.3f s"),
    Outcome.MISMATCH: (signals.mismatch, logging.INFO, "reused with a different request"),
    Outcome.INVALID_KEY: (signals.refused, logging.INFO, "malformed"),
    # The one outcome without a key: its message is whole.
    Outcome.KEY_REQUIRED: (
        signals.refused,
        logging.INFO,
        "request without an idempotency key where one is required",
    ),
    Outcome.NOT_REPLAYABLE: (signals.replayed, logging.INFO, "ran once, cannot be replayed"),
    Outcome.UNAVAILABLE: (
        signals.unavailable,
        logging.ERROR,
        "refused, the store is unavailable",
    ),
    Outcome.FAIL_OPEN: (
        signals.unavailable,
        logging.WARNING,
        "running without idempotency, the store is unavailable",
    ),
    Outcome.NOT_STORED: (
        signals.not_stored,
        logging.CRITICAL,
        "the action ran but its result was NOT STORED; a retry may run it again",
    ),
    Outcome.LEASE_LOST: (
        signals.lease_lost,
        logging.ERROR,
        "lease lost while running; another caller may run the action again",
    ),
    Outcome.INTEGRITY_FAILED: (
        signals.integrity_failed,
        logging.CRITICAL,
        "the stored record FAILED VERIFICATION (tampered, copied or planted); refused, "
        "not replayed, not run",
    ),
    Outcome.OUTCOME_UNKNOWN: (
        signals.outcome_unknown,
        logging.ERROR,
        "its owner died before storing an outcome; refused until an operator purges the "
        "abandoned record",
    ),
}


def _log_arguments(event: Event) -> tuple[str, tuple[Any, ...]]:
    """The log message of ``event`` and its arguments."""
    text = _REPORTS[event.outcome][2]
    args: tuple[Any, ...]
    if event.outcome is Outcome.KEY_REQUIRED:
        message, args = text, ()
    elif event.outcome is Outcome.EXECUTED:
        message, args = _KEYED + text, (event.key, event.scope, event.state)
    elif event.outcome in (Outcome.WAITED, Outcome.WAIT_TIMEOUT):
        message, args = _KEYED + text, (event.key, event.scope, event.wait or 0.0)
    else:
        message, args = _KEYED + text, (event.key, event.scope)
    if event.detail:
        return message + ": %s", (*args, event.detail)
    return message, args


def emit(
    outcome: Outcome,
    door: Door,
    scope: str | bytes,
    key: str | bytes,
    *,
    started: float | None = None,
    wait: float | None = None,
    request: Any = None,
    state: str | None = None,
    detail: str = "",
) -> None:
    """Report ``outcome``: signal, log record, observers. ``started`` is a monotonic time."""
    signal, level, _ = _REPORTS[outcome]
    logs = logger.isEnabledFor(level)
    if not (_observers or signal.receivers or logs):
        return
    # Positional: a storm's followers each build one, and keywords cost about a quarter more.
    event = Event(
        outcome,
        door,
        scope,
        key,
        None if started is None else time.monotonic() - started,
        wait,
        request,
        state,
        detail,
    )
    if signal.receivers:
        extra: dict[str, Any] = {"state": state} if state is not None else {}
        signal.send(
            sender=Event,
            scope=scope,
            key=key,
            request=request,
            outcome=outcome.value,
            door=door.value,
            wait=wait,
            **extra,
        )
    if logs:
        message, args = _log_arguments(event)
        logger.log(
            level,
            message,
            *args,
            extra={
                "idempotency_outcome": outcome.value,
                "idempotency_door": door.value,
                "idempotency_scope": scope,
                "idempotency_duration": event.duration,
                "idempotency_wait": wait,
                "idempotency_state": state,
            },
        )
    for observer in _observers:
        observer.event(event)
    if _tracers and outcome is not Outcome.LEASE_LOST:
        trace = _trace.get()
        if trace is None:
            trace = open_trace(door)
            assert trace is not None
        trace.end(event)


def store_op(op: StoreOp, seconds: float) -> None:
    """Report the duration of one store operation to the observers."""
    for observer in _observers:
        observer.store_op(op, seconds)


class _Timed:
    """Times one store operation for the observers, however it ends."""

    __slots__ = ("op", "started")

    def __init__(self, op: StoreOp) -> None:
        self.op = op

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        store_op(self.op, time.monotonic() - self.started)


# Without observers a store call is not timed at all: the drivers' fast path.
_UNTIMED = contextlib.nullcontext()


def timed(op: StoreOp) -> contextlib.AbstractContextManager[None]:
    """A context around one store operation that reports its duration (when observed)."""
    return _Timed(op) if _observers else _UNTIMED


@contextlib.contextmanager
def _nested(managers: list[contextlib.AbstractContextManager[Any]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield


def span(name: str, door: Door | None = None) -> contextlib.AbstractContextManager[Any]:
    """A span named ``name`` from every tracing observer (a no-op without one)."""
    if not _observers:
        return _NULL
    managers = [observer.span(name, door) for observer in _observers]
    return managers[0] if len(managers) == 1 else _nested(managers)
