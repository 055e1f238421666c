"""OpenTelemetry traces and metrics (``pip install django-idempotency[otel]``).

::

    IDEMPOTENCY = {
        ...,
        "OBSERVERS": ["django_idempotency.observers.otel.OpenTelemetryObserver"],
    }

Only ``opentelemetry-api`` is needed here: the SDK, its exporters and the global
providers are the application's to set up; until they are, the API's no-op providers
make every call below nearly free. The spans (``idempotency.<door>`` per request or
call, with ``claim``, ``wait`` and ``store`` children), their attributes and the metrics
(the Prometheus ones, named ``django_idempotency.requests`` and so on) are listed in the
docs' observability reference. ``idempotency.key_hash`` is :func:`key_hash`: the same
for every retry of one key, without the key leaving the process.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

from django.utils.crypto import salted_hmac
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ..events import Door, Event, Outcome, StoreOp

__all__ = ["OpenTelemetryObserver", "key_hash"]

_SCOPE = "django_idempotency"
_ERRORS = frozenset(
    {
        Outcome.UNAVAILABLE,
        Outcome.NOT_STORED,
        Outcome.INTEGRITY_FAILED,
        Outcome.OUTCOME_UNKNOWN,
    }
)


def key_hash(key: str | bytes) -> str:
    """The ``idempotency.key_hash`` attribute of ``key``: 16 hex digits, keyed by ``SECRET_KEY``."""
    return salted_hmac("django_idempotency.otel.key", key, algorithm="sha256").hexdigest()[:16]


class OpenTelemetryObserver:
    """Traces each protected request or call and counts outcomes through OpenTelemetry.

    ``tracer_provider`` and ``meter_provider`` default to the global ones.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        count = partial(meter.create_counter, unit="{request}")
        seconds = partial(meter.create_histogram, unit="s")
        self.requests = count(
            "django_idempotency.requests",
            description="Protected requests and calls, by door and by what became of them.",
        )
        self.wait = seconds(
            "django_idempotency.wait",
            description="Seconds a duplicate waited for the first request or call with its key.",
        )
        self.store = seconds(
            "django_idempotency.store",
            description="Seconds per idempotency store (Redis) operation.",
        )
        self.not_stored = count(
            "django_idempotency.not_stored",
            description="Actions that ran but whose result could not be stored.",
        )
        self.lease_lost = count(
            "django_idempotency.lease_lost",
            description="Running actions whose lease was lost (another caller may run them).",
        )

    # -- the request span -----------------------------------------------------------------

    def open(self, door: Door) -> Span:
        """Start the span of one request or call (made current by :meth:`activate`)."""
        return self.tracer.start_span(
            f"idempotency.{door.value}",
            kind=SpanKind.INTERNAL,
            attributes={"idempotency.door": door.value},
        )

    def activate(self, handle: Span) -> contextlib.AbstractContextManager[Any]:
        """Make the span current; :meth:`close` records errors and ends it."""
        return trace.use_span(
            handle, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def close(self, handle: Span, event: Event | None, error: BaseException | None) -> None:
        """Set the outcome's attributes and status, and end the span."""
        if event is not None:
            handle.set_attribute("idempotency.outcome", event.outcome.value)
            if event.key:
                handle.set_attribute("idempotency.key_hash", key_hash(event.key))
            if event.state is not None:
                handle.set_attribute("idempotency.state", event.state)
            if event.wait is not None:
                handle.set_attribute("idempotency.wait_seconds", event.wait)
            if event.outcome in _ERRORS:
                handle.set_status(Status(StatusCode.ERROR, event.detail or event.outcome.value))
        if error is not None:
            handle.record_exception(error)
            handle.set_status(Status(StatusCode.ERROR, type(error).__name__))
        handle.end()

    # -- child spans, counters and histograms ---------------------------------------------

    def span(self, name: str, door: Door | None) -> contextlib.AbstractContextManager[Any]:
        """A child span (``claim``, ``wait``, ``store``) of the current request span."""
        attributes = {"idempotency.door": door.value} if door is not None else {}
        return self.tracer.start_as_current_span(
            f"idempotency.{name}", kind=SpanKind.INTERNAL, attributes=attributes
        )

    def event(self, event: Event) -> None:
        """Count ``event``; a lost lease is also an event on the current span."""
        if event.outcome is Outcome.LEASE_LOST:
            self.lease_lost.add(1)
            trace.get_current_span().add_event(
                "idempotency.lease_lost", {"idempotency.door": event.door.value}
            )
            return
        door = event.door.value
        self.requests.add(1, {"door": door, "outcome": event.outcome.value})
        if event.wait is not None:
            self.wait.record(event.wait, {"door": door})
        if event.outcome is Outcome.NOT_STORED:
            self.not_stored.add(1)

    def store_op(self, op: StoreOp, seconds: float) -> None:
        """Time one store operation."""
        self.store.record(seconds, {"op": op.value})
