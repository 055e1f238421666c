"""The edge in front of Django (``django_idempotency.edge``), on real servers.

Each server kind runs the test project twice on one Redis: wrapped by the edge, and
plain (every replay then comes from inside Django). The project counts the requests
that reach Django's middleware and records every outcome its signals report, so each
test can tell whether a request entered Django and through which door it was answered.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from django_idempotency.edge import asgi_app, headers_scope, wsgi_app
from django_idempotency.edge.scope import from_headers

from .support.servers import eventually, serve_process, server_env

#: Framing headers each server computes for itself; everything else must be the same.
FRAMING = {"date", "server", "content-length", "transfer-encoding", "connection"}

Reply = tuple[int, list[tuple[str, str]], bytes]


class Project:
    """The edge server and the plain one of one server kind."""

    def __init__(self, kind: str, edge: int, plain: int) -> None:
        self.kind = kind
        self.edge = edge
        self.plain = plain

    def post(
        self,
        port: int,
        key: str | None,
        body: bytes = b'{"amount": 10}',
        api_key: str | None = "alice",
        path: str = "/edge/charge/?currency=eur",
    ) -> Reply:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        if api_key is not None:
            headers["X-Api-Key"] = api_key
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def stats(self, port: int) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", "/edge/stats/")
            stats: dict[str, Any] = json.loads(conn.getresponse().read())
            return stats
        finally:
            conn.close()

    def metric(self, port: int, door: str, outcome: str) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", "/metrics/")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "django_idempotency_requests_total" and sample.labels == {
                    "door": door,
                    "outcome": outcome,
                }:
                    return float(sample.value)
        return 0.0


class Watch:
    """What one server saw between :meth:`start` and :meth:`delta`."""

    def __init__(self, project: Project, port: int) -> None:
        self.project = project
        self.port = port
        before = project.stats(port)
        self.entered = before["entered"]
        self.events = len(before["events"])

    def delta(self) -> tuple[int, Counter[tuple[str, str]]]:
        """Requests that entered Django since, and the outcomes reported since."""
        now = self.project.stats(self.port)
        return now["entered"] - self.entered, Counter(map(tuple, now["events"][self.events :]))


def header(reply: Reply, name: str) -> str | None:
    return next((v for k, v in reply[1] if k.lower() == name.lower()), None)


def replayed_headers(reply: Reply) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in reply[1] if k.lower() not in FRAMING]


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def project(
    request: pytest.FixtureRequest, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    kind = request.param
    env = server_env(
        redis_server.url,
        tmp_path_factory.mktemp("edge") / "db.sqlite3",
        DJANGO_SETTINGS_MODULE="tests.support.edge_settings",
    )
    suffix = "asgi" if kind == "uvicorn" else "wsgi"
    # gthread under gunicorn: a request held at the gate must not block the others.
    threads = 4 if kind == "gunicorn" else 1
    with (
        serve_process(kind, env, 1, threads, f"tests.support.edge_app:edge_{suffix}") as (
            edge,
            _,
        ),
        serve_process(kind, env, 1, threads, f"tests.support.edge_app:plain_{suffix}") as (
            plain,
            _,
        ),
    ):
        yield Project(kind, edge, plain)


def new_key() -> str:
    return str(uuid.uuid4())


def test_edge_replay_never_enters_django_and_matches_the_in_django_replay(
    project: Project,
) -> None:
    key = new_key()
    first = project.post(project.edge, key)
    assert first[0] == 201 and header(first, "Idempotent-Replayed") is None

    watch = Watch(project, project.edge)
    at_edge = project.post(project.edge, key)
    entered, events = watch.delta()
    assert entered == 0
    assert events == Counter({("replayed", "edge"): 1})

    in_django = project.post(project.plain, key)
    assert header(in_django, "Idempotent-Replayed") == "true"
    assert at_edge[0] == in_django[0] == first[0]
    assert at_edge[2] == in_django[2] == first[2]
    assert replayed_headers(at_edge) == replayed_headers(in_django)
    assert header(at_edge, "Idempotent-Replayed") == "true"
    assert header(at_edge, "Set-Cookie") is None
    assert header(at_edge, "Content-Length") == str(len(at_edge[2]))


def test_changed_body_gets_422_at_the_edge(project: Project) -> None:
    key = new_key()
    assert project.post(project.edge, key)[0] == 201
    watch = Watch(project, project.edge)
    reply = project.post(project.edge, key, body=b'{"amount": 11}')
    entered, events = watch.delta()
    assert reply[0] == 422
    assert header(reply, "Content-Type") == "application/problem+json"
    assert json.loads(reply[2])["type"].endswith("fingerprint-mismatch")
    assert entered == 0
    assert events == Counter({("mismatch", "edge"): 1})
    # The same refusal Django gives, saying what the first request got.
    in_django = project.post(project.plain, key, body=b'{"amount": 11}')
    assert in_django[0] == 422
    assert json.loads(reply[2]) == json.loads(in_django[2])


def test_another_scope_is_never_replayed_and_runs_in_django(project: Project) -> None:
    key = new_key()
    alice = project.post(project.edge, key, api_key="alice")
    watch = Watch(project, project.edge)
    bob = project.post(project.edge, key, api_key="bob")
    anonymous = project.post(project.edge, key, api_key=None)
    entered, events = watch.delta()
    assert entered == 2
    assert events == Counter({("executed", "middleware"): 2})
    for other in (bob, anonymous):
        assert other[0] == 201 and header(other, "Idempotent-Replayed") is None
        assert other[2] != alice[2]  # its own run
    # Each scope then replays its own response, at the edge.
    assert project.post(project.edge, key, api_key="bob")[2] == bob[2]


def test_tampered_record_gets_500_record_integrity(project: Project, redis_server: Any) -> None:
    key = new_key()
    assert project.post(project.edge, key)[0] == 201
    client = redis_server.client()
    try:
        (name,) = client.keys("idem:{*}")
        raw = client.get(name)
        # A byte of the stored body, well before the MAC (the last 16 bytes).
        client.setrange(name, len(raw) - 20, bytes([raw[-20] ^ 1]))
    finally:
        client.close()
    watch = Watch(project, project.edge)
    reply = project.post(project.edge, key)
    entered, events = watch.delta()
    assert reply[0] == 500
    assert json.loads(reply[2])["type"].endswith("record-integrity")
    assert entered == 0
    assert events == Counter({("integrity_failed", "edge"): 1})


def test_no_key_and_first_time_pass_into_django_unchanged(project: Project) -> None:
    watch = Watch(project, project.edge)
    body = b'{"amount": 12}'
    no_key = project.post(project.edge, None, body=body)
    first = project.post(project.edge, new_key(), body=body)
    entered, events = watch.delta()
    assert entered == 2
    assert events == Counter({("executed", "middleware"): 1})
    for reply in (no_key, first):
        assert reply[0] == 201
        # The view read the very body the client sent, after the edge had read it.
        assert json.loads(reply[2])["body"] == hashlib.sha256(body).hexdigest()


def test_running_record_passes_into_django(project: Project, redis_server: Any) -> None:
    key = new_key()
    replies: dict[str, Reply] = {}

    def send(name: str) -> None:
        replies[name] = project.post(project.edge, key, path="/edge/gated/")

    client = redis_server.client()
    watch = Watch(project, project.edge)
    try:
        owner = threading.Thread(target=send, args=("owner",))
        owner.start()
        assert client.blpop(["edge:entered"], timeout=60) is not None  # the owner runs
        duplicate = threading.Thread(target=send, args=("duplicate",))
        duplicate.start()
        # The duplicate went past the edge into Django's middleware: only then let the
        # owner finish (the duplicate waits for it there, or finds it done).
        eventually(lambda: project.stats(project.edge)["entered"] - watch.entered == 2)
        client.rpush("edge:gate", "open")
        owner.join(60)
        duplicate.join(60)
    finally:
        client.close()
    entered, events = watch.delta()
    assert entered == 2
    assert replies["owner"][0] == 201
    assert header(replies["duplicate"], "Idempotent-Replayed") == "true"
    assert replies["duplicate"][2] == replies["owner"][2]
    assert events[("executed", "middleware")] == 1
    # It waited for the owner, or found its record done: either way, inside Django.
    assert events[("waited", "middleware")] + events[("replayed", "middleware")] == 1
    assert not [event for event in events if event[1] == "edge"]


def test_key_and_body_limits_are_left_to_django(project: Project) -> None:
    key = new_key()
    assert project.post(project.edge, key)[0] == 201
    watch = Watch(project, project.edge)
    too_long = project.post(project.edge, "k" * 256)
    too_big = project.post(project.edge, key, body=b"x" * (64 * 1024 + 1))
    entered, events = watch.delta()
    assert entered == 2
    assert too_long[0] == 400
    assert json.loads(too_long[2])["type"].endswith("invalid-key")
    assert too_big[0] == 400 and header(too_big, "Idempotent-Replayed") is None
    assert events == Counter({("invalid_key", "middleware"): 1})


def test_metrics_and_signals_count_each_edge_replay_once(project: Project) -> None:
    key = new_key()
    assert project.post(project.edge, key)[0] == 201
    before = project.metric(project.edge, "edge", "replayed")
    watch = Watch(project, project.edge)
    for _ in range(3):
        assert project.post(project.edge, key)[0] == 201
    entered, events = watch.delta()
    assert entered == 0
    assert events == Counter({("replayed", "edge"): 3})
    assert project.metric(project.edge, "edge", "replayed") - before == 3


@headers_scope
def _by_tenant(headers: Any) -> str:
    return str(headers.get("X-Tenant", "anonymous"))


@pytest.mark.no_redis
@pytest.mark.parametrize("wrap", [asgi_app, wsgi_app])
def test_the_wrapper_refuses_the_default_session_scope(wrap: Any) -> None:
    def application(*args: Any) -> Any:
        raise AssertionError("never called")

    with (
        override_settings(IDEMPOTENCY={}),
        pytest.raises(ImproperlyConfigured, match=r'IDEMPOTENCY\["SCOPE"\].*default_scope'),
    ):
        wrap(application)
    with override_settings(IDEMPOTENCY={"SCOPE": _by_tenant}):
        assert callable(wrap(application))
    with (
        override_settings(IDEMPOTENCY={"SCOPE": _by_tenant, "FINGERPRINT": lambda r: b""}),
        pytest.raises(ImproperlyConfigured, match=r'IDEMPOTENCY\["FINGERPRINT"\]'),
    ):
        wrap(application)


@pytest.mark.no_redis
def test_a_headers_scope_gives_django_and_the_edge_one_scope() -> None:
    from django.test import RequestFactory

    request = RequestFactory().post("/", headers={"X-Tenant": "acme"})
    assert _by_tenant(request) == "acme"
    scope_of = from_headers(_by_tenant)
    assert scope_of is not None and scope_of({"X-Tenant": "acme"}) == "acme"


@pytest.mark.no_redis
def test_a_headers_scope_lets_the_middleware_come_before_authentication() -> None:
    from django_idempotency.checks import check_middleware_order

    middleware = [
        "django_idempotency.middleware.IdempotencyMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    with override_settings(MIDDLEWARE=middleware, IDEMPOTENCY={}):
        assert [e.id for e in check_middleware_order()] == ["django_idempotency.E003"]
    with override_settings(MIDDLEWARE=middleware, IDEMPOTENCY={"SCOPE": _by_tenant}):
        assert check_middleware_order() == []


@pytest.mark.no_redis
@pytest.mark.slow
def test_a_server_with_the_default_scope_does_not_start(tmp_path: Any) -> None:
    """uvicorn loading the wrapped application under the default scope exits, saying why."""
    import subprocess
    import sys
    from pathlib import Path

    from .support.servers import ROOT, free_port

    env = server_env("redis://127.0.0.1:1/0", tmp_path / "db.sqlite3")  # never connected
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "uvicorn"),
            "tests.support.edge_app:edge_asgi",
            "--port",
            str(free_port()),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "django_idempotency.edge cannot start" in done.stderr
    assert 'IDEMPOTENCY["SCOPE"]' in done.stderr
