"""Prometheus metrics from real traffic: exact counts per door and outcome, in one process
and summed over two gunicorn workers (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections import Counter as Tally
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from django_idempotency import events, run
from django_idempotency.observers.prometheus import PrometheusObserver

from .support.servers import migrate, serve, server_env

REQUESTS = "django_idempotency_requests_total"


def samples(exposition: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``{sorted labels: value}`` of the samples called ``name`` in an exposition text."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by_door_outcome(exposition: str) -> Tally[tuple[str, str]]:
    return Tally(
        {
            (dict(labels)["door"], dict(labels)["outcome"]): int(value)
            for labels, value in samples(exposition, REQUESTS).items()
            if value
        }
    )


@pytest.fixture
def registry() -> Any:
    registry = CollectorRegistry()
    observer = events.install(PrometheusObserver(registry))
    yield registry
    events.uninstall(observer)


def post(client: Client, path: str, key: str | None, body: dict[str, Any]) -> int:
    headers = {"Idempotency-Key": key} if key is not None else {}
    response = client.post(path, json.dumps(body), content_type="application/json", headers=headers)
    return int(response.status_code)


def test_every_door_and_outcome_is_counted_exactly_once(registry):
    client = Client()
    expected: Tally[tuple[str, str]] = Tally()

    key = str(uuid.uuid4())
    assert post(client, "/middleware/", key, {"a": 1}) == 201
    assert post(client, "/middleware/", key, {"a": 1}) == 201
    assert post(client, "/middleware/", key, {"a": 2}) == 422
    assert post(client, "/middleware/", '"unterminated', {"a": 1}) == 400
    expected.update(
        {
            ("middleware", "executed"): 1,
            ("middleware", "replayed"): 1,
            ("middleware", "mismatch"): 1,
            ("middleware", "invalid_key"): 1,
        }
    )

    assert post(client, "/decorator-strict/", None, {}) == 400
    expected[("decorator", "key_required")] += 1

    key = str(uuid.uuid4())
    assert post(client, "/drf/", key, {"amount": 5}) == 201
    assert post(client, "/drf/", key, {"amount": 5}) == 201
    expected.update({("drf", "executed"): 1, ("drf", "replayed"): 1})

    # Eight duplicates at once: one runs (for 2 s), seven wait for it.
    key, start = str(uuid.uuid4()), threading.Barrier(8)
    statuses: list[int] = []

    def duplicate() -> None:
        start.wait()
        statuses.append(post(Client(), "/decorator/?sleep=2", key, {"b": 1}))

    threads = [threading.Thread(target=duplicate) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 8
    expected.update({("decorator", "executed"): 1, ("decorator", "waited"): 7})

    key = str(uuid.uuid4())
    assert run(key, lambda: 42) == 42
    assert run(key, lambda: 43) == 42
    expected.update({("run", "executed"): 1, ("run", "replayed"): 1})

    # Redis down (a port nothing listens on): fail closed, 503, counted as unavailable.
    with override_settings(IDEMPOTENCY={"REDIS": "redis://127.0.0.1:9/0"}):
        assert post(client, "/middleware/", str(uuid.uuid4()), {"c": 1}) == 503
    expected[("middleware", "unavailable")] += 1

    exposition = generate_latest(registry).decode()
    assert by_door_outcome(exposition) == expected
    waits = samples(exposition, "django_idempotency_wait_seconds_count")
    assert waits == {(("door", "decorator"),): 7.0}
    stores = samples(exposition, "django_idempotency_store_seconds_count")
    # One completion per stored result; a claim per request that reached Redis (the
    # seven coalesced waiters did not: they waited on their process's leader).
    executed = sum(n for (_, outcome), n in expected.items() if outcome == "executed")
    assert stores[(("op", "complete"),)] == executed, stores
    claims = sum(expected.values()) - expected[("decorator", "waited")]
    claims -= expected[("middleware", "invalid_key")] + expected[("decorator", "key_required")]
    assert stores[(("op", "claim"),)] == claims, stores
    assert samples(exposition, "django_idempotency_not_stored_total") == {(): 0.0}
    assert samples(exposition, "django_idempotency_lease_lost_total") == {(): 0.0}


def test_observers_from_settings_are_installed_and_replaced(settings):
    def installed() -> list[Any]:
        return [o for o in events._observers if isinstance(o, PrometheusObserver)]

    settings.IDEMPOTENCY = {
        **settings.IDEMPOTENCY,
        "OBSERVERS": ["django_idempotency.observers.prometheus.PrometheusObserver"],
    }
    assert len(installed()) == 1
    settings.IDEMPOTENCY = {"REDIS": "default"}
    assert installed() == []


@pytest.mark.no_redis
@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("django_idempotency.observers.prometheus.PrometheusObserver", 'IDEMPOTENCY["OBSERVERS"]'),
        (["no.such.Observer"], 'IDEMPOTENCY["OBSERVERS"][0]'),
        ([object()], 'IDEMPOTENCY["OBSERVERS"][0]'),
    ],
)
def test_bad_observers_are_refused_naming_the_setting(value, named):
    from django.core.exceptions import ImproperlyConfigured

    from django_idempotency.conf import build

    with pytest.raises(ImproperlyConfigured) as raised:
        build({"REDIS": "default", "OBSERVERS": value})
    assert named in str(raised.value)


def http_post(port: int, path: str, key: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            path,
            body=b"{}",
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_two_gunicorn_workers_are_summed(redis_url: str, tmp_path: Path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = server_env(
        redis_url,
        tmp_path / "db.sqlite3",
        TEST_PROMETHEUS="1",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    migrate(env)
    keys = [str(uuid.uuid4()) for _ in range(10)]
    with serve("gunicorn", env, workers=2) as port:
        # Sync workers serve one request at a time: ten at once reach both.
        def burst(path: str) -> list[tuple[int, bytes]]:
            out: list[tuple[int, bytes]] = []
            threads = [
                threading.Thread(target=lambda k=k: out.append(http_post(port, path, k)))
                for k in keys
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return out

        first = burst("/middleware/?sleep=0.2")
        again = burst("/middleware/?sleep=0.2")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics/")
        exposition = conn.getresponse().read().decode()
        conn.close()
    assert [status for status, _ in first + again] == [201] * 20
    assert len({json.loads(body)["pid"] for _, body in first}) == 2  # both workers ran some
    assert by_door_outcome(exposition) == {
        ("middleware", "executed"): 10,
        ("middleware", "replayed"): 10,
    }


def test_lease_renewals_are_timed_while_an_action_runs(registry: Any) -> None:
    def renewals() -> float:
        value = registry.get_sample_value("django_idempotency_store_seconds_count", {"op": "renew"})
        return 0.0 if value is None else float(value)

    renewed = threading.Event()

    def slow() -> int:
        # Holds the claim until the lease keeper has renewed it at least once.
        for _ in range(200):
            if renewals():
                renewed.set()
                break
            renewed.wait(0.05)
        return 1

    assert run(str(uuid.uuid4()), slow, lock_ttl=0.3) == 1
    assert renewed.is_set()
    assert registry.get_sample_value("django_idempotency_lease_lost_total") == 0


class Recorder:
    """An observer that keeps every event (no metrics, no spans)."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def event(self, event: events.Event) -> None:
        self.events.append(event)

    def store_op(self, op: events.StoreOp, seconds: float) -> None:
        pass

    def span(self, name: str, door: events.Door | None) -> Any:
        return events._NULL


def test_run_events_carry_the_duration_of_the_call():
    recorder = Recorder()
    events.install(recorder)
    key, pause = uuid.uuid4().hex, 0.05

    def action() -> str:
        threading.Event().wait(pause)
        return "done"

    try:
        assert run(key, action) == "done"
        assert run(key, action) == "done"
    finally:
        events.uninstall(recorder)
    mine = [e for e in recorder.events if e.key == key]
    assert [e.outcome for e in mine] == [events.Outcome.EXECUTED, events.Outcome.REPLAYED]
    executed, replayed = mine
    # The first call's duration covers the action; the replay's is its own, shorter one.
    assert executed.duration is not None and executed.duration >= pause
    assert replayed.duration is not None and replayed.duration < executed.duration
