"""Prometheus metrics (``pip install django-idempotency[prometheus]``).

::

    IDEMPOTENCY = {
        ...,
        "OBSERVERS": ["django_idempotency.observers.prometheus.PrometheusObserver"],
    }
    # urls.py
    path("metrics", django_idempotency.observers.prometheus.metrics_view)

The metrics are listed in the docs' observability reference. The client's key and scope
are never labels (unbounded, and the key may be a secret). Several processes: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server starts;
:func:`metrics_view` then sums every process's values.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from ..events import Door, Event, Outcome, StoreOp

__all__ = ["PrometheusObserver", "metrics_view"]

#: Wait times span a replay served at once to a duplicate that gave up (WAIT_TIMEOUT).
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Redis round trips: sub-millisecond on a LAN, seconds only when something is wrong.
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 5)

_NULL = contextlib.nullcontext()


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "django_idempotency_requests",
            "Protected requests and calls, by door and by what became of them.",
            ["door", "outcome"],
            registry=registry,
        )
        self.wait = Histogram(
            "django_idempotency_wait_seconds",
            "Seconds a duplicate waited for the first request or call with its key.",
            ["door"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.store = Histogram(
            "django_idempotency_store_seconds",
            "Seconds per idempotency store (Redis) operation.",
            ["op"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self.not_stored = Counter(
            "django_idempotency_not_stored",
            "Actions that ran but whose result could not be stored.",
            registry=registry,
        )
        self.lease_lost = Counter(
            "django_idempotency_lease_lost",
            "Running actions whose lease was lost (another caller may run them again).",
            registry=registry,
        )


# One set of metrics per registry: settings are rebuilt (tests, reloads) and each build
# makes a new observer, but a registry refuses a metric name registered twice.
_metrics: dict[CollectorRegistry, _Metrics] = {}
_lock = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    with _lock:
        if registry not in _metrics:
            _metrics[registry] = _Metrics(registry)
        return _metrics[registry]


class PrometheusObserver:
    """Counts every outcome and times every store operation in Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.metrics = _metrics_for(registry)

    def event(self, event: Event) -> None:
        """Count ``event`` (and its wait, if it waited)."""
        m = self.metrics
        if event.outcome is Outcome.LEASE_LOST:  # it happens during a request: no outcome
            m.lease_lost.inc()
            return
        door = event.door.value
        m.requests.labels(door, event.outcome.value).inc()
        if event.wait is not None:
            m.wait.labels(door).observe(event.wait)
        if event.outcome is Outcome.NOT_STORED:
            m.not_stored.inc()

    def store_op(self, op: StoreOp, seconds: float) -> None:
        """Time one store operation."""
        self.metrics.store.labels(op.value).observe(seconds)

    def span(self, name: str, door: Door | None) -> contextlib.AbstractContextManager[Any]:
        """Metrics only: no spans."""
        return _NULL


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition of this process, or of every process in multiprocess mode.

    Not protected by anything: route it where only your scraper reaches, or wrap it.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call,unused-ignore]
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
