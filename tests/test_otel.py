"""OpenTelemetry: spans captured with the SDK's in-memory exporter and metrics read with its
in-memory reader, from real traffic through each door against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client, override_settings
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from django_idempotency import arun, events, run
from django_idempotency.conf import get_settings
from django_idempotency.observers.otel import OpenTelemetryObserver, key_hash

pytestmark = pytest.mark.matrix


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def requests(self, name: str) -> list[ReadableSpan]:
        """The request spans called ``name`` (``idempotency.<door>``)."""
        return [s for s in self.finished() if s.name == name]

    def children(self, parent: ReadableSpan) -> list[str]:
        assert parent.context is not None
        return [
            s.name
            for s in self.finished()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """``{sorted attributes: data point}`` of ``metric``, cumulative since the start."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.metrics.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        for point in m.data.data_points:
                            found[tuple(sorted((point.attributes or {}).items()))] = point
        return found

    def outcomes(self) -> Tally[tuple[str, str]]:
        return Tally(
            {
                (dict(labels)["door"], dict(labels)["outcome"]): int(point.value)
                for labels, point in self.points("django_idempotency.requests").items()
            }
        )


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    observer = events.install(
        OpenTelemetryObserver(
            tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
        )
    )
    yield Telemetry(spans, reader, tracer_provider)
    events.uninstall(observer)


def post(client: Client, path: str, key: str | None, body: dict[str, Any]) -> int:
    headers = {"Idempotency-Key": key} if key is not None else {}
    response = client.post(path, json.dumps(body), content_type="application/json", headers=headers)
    return int(response.status_code)


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_request_span_per_request_with_claim_and_store_children(otel):
    client, key = Client(), str(uuid.uuid4())
    assert post(client, "/middleware/", key, {"a": 1}) == 201
    assert post(client, "/middleware/", key, {"a": 1}) == 201

    first, replay = otel.requests("idempotency.middleware")
    assert attributes(first) == {
        "idempotency.door": "middleware",
        "idempotency.outcome": "executed",
        "idempotency.state": "done",
        "idempotency.key_hash": key_hash(key),
    }
    assert otel.children(first) == ["idempotency.claim", "idempotency.store"]
    assert attributes(replay)["idempotency.outcome"] == "replayed"
    assert otel.children(replay) == ["idempotency.claim"]
    # Each retry of a key is findable by the same hash; the key itself is never exported.
    assert attributes(replay)["idempotency.key_hash"] == key_hash(key)
    assert key_hash(key) != key_hash(str(uuid.uuid4()))
    for span in otel.finished():
        assert key not in json.dumps(attributes(span))
    assert first.status.status_code is StatusCode.UNSET


def test_the_decorated_view_and_the_run_action_nest_under_their_request_span(otel):
    tracer = otel.tracer_provider.get_tracer("tests")

    def action() -> int:
        with tracer.start_as_current_span("the action"):
            return 7

    key = uuid.uuid4().hex
    assert run(key, action) == 7
    assert run(key, action) == 7
    first, replay = otel.requests("idempotency.run")
    assert otel.children(first) == ["idempotency.claim", "the action", "idempotency.store"]
    assert otel.children(replay) == ["idempotency.claim"]
    assert attributes(replay)["idempotency.outcome"] == "replayed"

    async def aaction() -> int:
        with tracer.start_as_current_span("the coroutine"):
            return 8

    assert asyncio.run(arun(uuid.uuid4().hex, aaction)) == 8
    (coroutine,) = [s for s in otel.requests("idempotency.run") if s not in (first, replay)]
    assert otel.children(coroutine) == ["idempotency.claim", "the coroutine", "idempotency.store"]

    # The decorator runs the view inside the span; the test view is plain, so its
    # database work is not traced, but the store after it is a child as before.
    assert post(Client(), "/decorator/", str(uuid.uuid4()), {"b": 1}) == 201
    (decorated,) = otel.requests("idempotency.decorator")
    assert otel.children(decorated) == ["idempotency.claim", "idempotency.store"]


def test_concurrent_duplicates_get_wait_spans_and_the_wait_time(otel):
    key, start = str(uuid.uuid4()), threading.Barrier(4)
    statuses: list[int] = []

    def duplicate() -> None:
        start.wait()
        statuses.append(post(Client(), "/decorator/?sleep=1", key, {"b": 1}))

    threads = [threading.Thread(target=duplicate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 4

    spans = otel.requests("idempotency.decorator")
    outcomes = Tally(attributes(s)["idempotency.outcome"] for s in spans)
    assert outcomes == {"executed": 1, "waited": 3}
    for span in spans:
        if attributes(span)["idempotency.outcome"] == "waited":
            assert "idempotency.wait" in otel.children(span)
            assert attributes(span)["idempotency.wait_seconds"] > 0
    assert otel.outcomes() == {("decorator", "executed"): 1, ("decorator", "waited"): 3}
    (waits,) = otel.points("django_idempotency.wait").values()
    assert waits.count == 3


def test_refusals_and_an_outage_are_spans_with_the_right_status(otel):
    client = Client()
    assert post(client, "/middleware/", '"unterminated', {"a": 1}) == 400
    assert post(client, "/decorator-strict/", None, {}) == 400
    with override_settings(IDEMPOTENCY={"REDIS": "redis://127.0.0.1:9/0"}):
        assert post(client, "/middleware/", str(uuid.uuid4()), {"c": 1}) == 503

    invalid, unavailable = otel.requests("idempotency.middleware")
    assert attributes(invalid)["idempotency.outcome"] == "invalid_key"
    assert invalid.status.status_code is StatusCode.UNSET
    assert attributes(unavailable)["idempotency.outcome"] == "unavailable"
    assert unavailable.status.status_code is StatusCode.ERROR
    (required,) = otel.requests("idempotency.decorator")
    assert attributes(required)["idempotency.outcome"] == "key_required"
    assert "idempotency.key_hash" not in attributes(required)
    assert otel.outcomes() == {
        ("middleware", "invalid_key"): 1,
        ("middleware", "unavailable"): 1,
        ("decorator", "key_required"): 1,
    }


def test_every_door_is_counted_and_store_operations_are_timed(otel):
    client = Client()
    key = str(uuid.uuid4())
    assert post(client, "/drf/", key, {"amount": 5}) == 201
    assert post(client, "/drf/", key, {"amount": 5}) == 201
    assert post(client, "/drf/", key, {"amount": 6}) == 422
    key = uuid.uuid4().hex
    assert run(key, lambda: 1) == 1
    assert run(key, lambda: 2) == 1

    assert otel.outcomes() == {
        ("drf", "executed"): 1,
        ("drf", "replayed"): 1,
        ("drf", "mismatch"): 1,
        ("run", "executed"): 1,
        ("run", "replayed"): 1,
    }
    stores = {dict(k)["op"]: p.count for k, p in otel.points("django_idempotency.store").items()}
    assert stores == {"claim": 5, "complete": 2}
    (mismatch,) = [
        s
        for s in otel.requests("idempotency.drf")
        if attributes(s)["idempotency.outcome"] == "mismatch"
    ]
    assert mismatch.end_time is not None


def test_an_action_that_raises_ends_its_span_once_with_the_stored_error(otel):
    def broken() -> None:
        raise ValueError("no")

    key = uuid.uuid4().hex
    for _ in range(2):
        with pytest.raises(ValueError):
            run(key, broken)
    first, replay = otel.requests("idempotency.run")
    assert attributes(first)["idempotency.outcome"] == "executed"
    assert attributes(first)["idempotency.state"] == "error"
    assert attributes(replay)["idempotency.outcome"] == "replayed"
    # Two calls, two spans: neither was left open nor ended twice.
    assert len(otel.requests("idempotency.run")) == 2


def test_without_a_tracer_no_trace_is_opened():
    assert events.open_trace(events.Door.RUN) is None
    assert events.active(None).__enter__() is None


def test_the_observer_is_accepted_by_dotted_path_and_installed_once(settings):
    path = "django_idempotency.observers.otel.OpenTelemetryObserver"
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "OBSERVERS": [path]}
    installed = [o for o in events._observers if isinstance(o, OpenTelemetryObserver)]
    assert len(installed) == 1
    # The settings hold the instance that receives the events, not a second one.
    (configured,) = get_settings().OBSERVERS
    assert configured is installed[0]
    settings.IDEMPOTENCY = {"REDIS": "default"}
    assert not [o for o in events._observers if isinstance(o, OpenTelemetryObserver)]


def test_the_package_imports_without_the_optional_integrations():
    # Extras are imported only by their own modules: the core must not pull them in.
    code = (
        "import sys, django; from django.conf import settings; "
        "settings.configure(INSTALLED_APPS=['django_idempotency'], "
        "IDEMPOTENCY={'REDIS': 'redis://127.0.0.1:9/0'}); django.setup(); "
        "import django_idempotency, django_idempotency.engine, django_idempotency.flows.http; "
        "print(sorted(m for m in ('opentelemetry', 'prometheus_client', 'celery') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
