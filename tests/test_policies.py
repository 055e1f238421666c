"""The policies users choose: which HTTP responses are stored, what a retry gets after
its owner died unfinished, and how refusals reach clients (Retry-After, documented
problem types, DRF's exception handler, CORS).

Against the session's Redis; the outcome-unknown tests kill real owners: a process
running ``run()`` and a gunicorn worker, SIGKILLed inside the action.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.test import Client

from django_idempotency import run, signals
from django_idempotency.checks import check_cors
from django_idempotency.conf import DEFAULTS
from django_idempotency.exceptions import (
    FingerprintMismatch,
    IdempotencyUnavailable,
    KeyRequired,
    OutcomeUnknown,
)
from django_idempotency.http import PROBLEM_CONTENT_TYPE

from .support import policy_views, policy_workers
from .support.deploy import Reply, gone, post, starts
from .support.servers import eventually, free_port, serve_process, server_env
from .test_celery import worker as celery_worker  # noqa: F401  (a fixture)
from .test_deploy import Call

#: A short lease, so a killed owner's lease ends soon.
LOCK_TTL = 1.5
REQUEST_TIMEOUT = 30.0


def order(client: Client, path: str, key: str, body: dict[str, Any]) -> Any:
    return client.post(
        path, data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key
    )


@pytest.fixture
def policy_urls(settings: Any) -> Any:
    settings.ROOT_URLCONF = "tests.support.policy_urls"
    policy_views.calls.clear()
    return settings


def inspect_json(*args: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    call_command("idempotency_inspect", "list", "--json", *args, stdout=out)
    listed: list[dict[str, Any]] = json.loads(out.getvalue())
    return listed


# -- what is stored ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/middleware/", "/decorator/", "/mixin/"])
def test_a_400_is_stored_by_default_and_its_422_says_so(policy_urls, path):
    client, key = Client(), str(uuid.uuid4())
    first = order(client, path, key, {})
    assert first.status_code == 400
    corrected = order(client, path, key, {"item": "book"})
    assert corrected.status_code == FingerprintMismatch.status
    problem = corrected.json()
    assert problem["type"].endswith(FingerprintMismatch.type_slug)
    # The client learns why: its key already holds the first answer, a 400.
    assert str(first.status_code) in problem["detail"]
    assert policy_views.calls == [path]  # the corrected request did not run
    again = order(client, path, key, {})
    assert again.status_code == 400 and again["Idempotent-Replayed"] == "true"
    assert policy_views.calls == [path]


@pytest.mark.parametrize(
    "path, setting",
    [
        ("/middleware/", {"STORE_RESPONSES": "2xx"}),  # the middleware takes the setting
        ("/decorator-2xx/", {}),  # @idempotent_view(store_responses="2xx")
        ("/mixin-2xx/", {}),  # idempotency_options = {"store_responses": "2xx"}
    ],
)
def test_a_400_not_stored_when_the_policy_says_so_lets_the_corrected_retry_run(
    policy_urls, path, setting
):
    policy_urls.IDEMPOTENCY = {**policy_urls.IDEMPOTENCY, **setting}
    client, key = Client(), str(uuid.uuid4())
    assert order(client, path, key, {}).status_code == 400
    corrected = order(client, path, key, {"item": "book"})
    assert corrected.status_code == 201 and not corrected.has_header("Idempotent-Replayed")
    again = order(client, path, key, {"item": "book"})
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.content == corrected.content
    assert policy_views.calls == [path, path]


def test_a_status_set_and_a_callable_pick_what_is_stored(policy_urls):
    client = Client()
    for policy in ({201}, "tests.test_policies.only_created"):
        policy_urls.IDEMPOTENCY = {**policy_urls.IDEMPOTENCY, "STORE_RESPONSES": policy}
        policy_views.calls.clear()
        key = str(uuid.uuid4())
        assert order(client, "/middleware/", key, {}).status_code == 400
        assert order(client, "/middleware/", key, {}).status_code == 400
        assert len(policy_views.calls) == 2, policy  # released each time: ran twice
        assert order(client, "/middleware/", key, {"item": "pen"}).status_code == 201
        assert order(client, "/middleware/", key, {"item": "pen"})["Idempotent-Replayed"]
        assert len(policy_views.calls) == 3, policy


def test_a_callable_policy_sees_the_rendered_response(policy_urls):
    client = Client()
    for body, stored in ((b"mark", True), (b"plain", False)):
        key = str(uuid.uuid4())
        send = partial(
            client.post,
            "/rendered/",
            data=body,
            content_type="text/plain",
            HTTP_IDEMPOTENCY_KEY=key,
        )
        first, second = send(), send()
        assert second.content == first.content
        assert second.has_header("Idempotent-Replayed") is stored, body
    assert len(policy_views.calls) == 3  # the marked one ran once, the plain one twice


def only_created(response: Any) -> bool:
    return bool(response.status_code == 201)


# -- refusals: Retry-After, documented types, DRF's handler, CORS -------------------------


def test_503_carries_retry_after_and_its_type_and_link_point_at_the_docs(policy_urls):
    dead = f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=1"
    policy_urls.IDEMPOTENCY = {"REDIS": dead}
    response = order(Client(), "/middleware/", str(uuid.uuid4()), {"item": "book"})
    assert response.status_code == IdempotencyUnavailable.status
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert int(response["Retry-After"]) >= 1
    documented = DEFAULTS["PROBLEM_TYPE_BASE"] + IdempotencyUnavailable.type_slug
    assert documented.startswith("https://")
    assert response.json()["type"] == documented
    assert response["Link"] == f'<{documented}>; rel="describedby"'
    assert policy_views.calls == []


def test_the_problem_type_base_is_a_setting(policy_urls):
    base = "https://api.example.com/problems/"
    policy_urls.IDEMPOTENCY = {**policy_urls.IDEMPOTENCY, "PROBLEM_TYPE_BASE": base}
    response = Client().post("/required/", data={}, content_type="application/json")
    assert response.json()["type"] == base + KeyRequired.type_slug
    assert response["Link"] == f'<{base + KeyRequired.type_slug}>; rel="describedby"'


def test_the_mixin_hands_refusals_to_the_projects_drf_handler_when_asked(policy_urls):
    policy_urls.REST_FRAMEWORK = {
        **policy_urls.REST_FRAMEWORK,
        "EXCEPTION_HANDLER": "tests.support.policy_views.envelope_handler",
    }
    client = Client()
    plain = client.post("/required/", data={}, content_type="application/json")
    assert plain.status_code == 400 and plain["Content-Type"] == PROBLEM_CONTENT_TYPE

    policy_urls.IDEMPOTENCY = {**policy_urls.IDEMPOTENCY, "DRF_EXCEPTION_HANDLER": True}
    missing = client.post("/required/", data={}, content_type="application/json")
    assert missing.status_code == KeyRequired.status
    assert missing.json()["error"]["code"] == KeyRequired.type_slug
    key = str(uuid.uuid4())
    assert order(client, "/required/", key, {}).status_code == 400
    reused = order(client, "/required/", key, {"item": "book"})
    assert reused.status_code == FingerprintMismatch.status
    assert reused.json()["error"]["code"] == FingerprintMismatch.type_slug
    assert reused["Content-Type"] != PROBLEM_CONTENT_TYPE
    assert policy_views.calls == ["/required/"]


CORS = ["corsheaders.middleware.CorsMiddleware", "django.middleware.common.CommonMiddleware"]


def test_the_cors_check_warns_until_the_key_is_allowed_and_the_marker_exposed(settings):
    settings.MIDDLEWARE = [*CORS]
    assert {w.id for w in check_cors()} == {"django_idempotency.W004"}
    assert len(check_cors()) == 2  # the defaults neither allow the key nor expose the marker
    settings.CORS_ALLOW_HEADERS = ["content-type", "idempotency-key"]
    assert ["CORS_EXPOSE_HEADERS" in w.msg for w in check_cors()] == [True]
    settings.CORS_EXPOSE_HEADERS = ["Idempotent-Replayed"]
    assert check_cors() == []
    settings.MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
    del settings.CORS_ALLOW_HEADERS, settings.CORS_EXPOSE_HEADERS
    assert check_cors() == []  # no django-cors-headers: nothing to say


def test_the_cors_check_follows_the_configured_header_names(settings):
    settings.MIDDLEWARE = [*CORS]
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "HEADER": "X-Request-Key"}
    settings.CORS_ALLOW_HEADERS = ["idempotency-key"]
    settings.CORS_EXPOSE_HEADERS = ["Idempotent-Replayed"]
    assert ["X-Request-Key" in w.msg for w in check_cors()] == [True]


# -- outcome unknown: run() ----------------------------------------------------------------


def kill_owner_of(redis_url: str, client: redis.Redis, key: str, policy: str) -> int:
    """Start a process that claims ``key`` under ``policy`` and SIGKILL it inside its action."""
    started = f"started:{key}"
    owner = multiprocessing.get_context("spawn").Process(
        target=policy_workers.run_until_killed, args=(redis_url, key, started, LOCK_TTL, policy)
    )
    owner.start()
    eventually(lambda: client.lrange(started, 0, -1), 60, "the owner's action to start")
    assert owner.pid is not None
    os.kill(owner.pid, signal.SIGKILL)
    owner.join()
    return owner.pid


@pytest.mark.django_db
def test_run_refuses_a_dead_owners_key_until_an_operator_purges_it(
    redis_url, redis_client, admin_client
):
    key = f"payment-{uuid.uuid4()}"
    kill_owner_of(redis_url, redis_client, key, "refuse")
    ran: list[int] = []
    refused: list[Any] = []

    def receiver(**kwargs: Any) -> None:
        refused.append(kwargs["key"])

    signals.outcome_unknown.connect(receiver)
    try:
        # The retry waits for the dead owner's lease to end, then is refused: never runs.
        with pytest.raises(OutcomeUnknown):
            run(key, lambda: ran.append(1), wait_timeout=LOCK_TTL * 4)
        with pytest.raises(OutcomeUnknown):
            run(key, lambda: ran.append(1), outcome_unknown="rerun")  # the record's policy
    finally:
        signals.outcome_unknown.disconnect(receiver)
    assert ran == []
    assert refused == [key, key]
    (listed,) = inspect_json("--key-glob", key)
    assert listed["abandoned"] is True and listed["state"] == "running"
    page = admin_client.get("/admin/django_idempotency/idempotencykey/", {"q": key})
    assert page.status_code == 200 and "abandoned" in page.content.decode()
    run(f"other-{key}", lambda: None)  # a finished record is not listed as abandoned
    other = admin_client.get("/admin/django_idempotency/idempotencykey/", {"q": f"other-{key}"})
    assert key in other.content.decode() and "abandoned" not in other.content.decode()

    call_command("idempotency_inspect", "purge", key, "--yes", stdout=io.StringIO())

    def charge(answer: str) -> str:
        ran.append(1)
        return answer

    assert run(key, partial(charge, "charged")) == "charged"
    assert run(key, partial(charge, "again")) == "charged"
    assert ran == [1]


def test_run_runs_a_dead_owners_key_again_by_default(redis_url, redis_client):
    key = f"payment-{uuid.uuid4()}"
    kill_owner_of(redis_url, redis_client, key, "rerun")
    assert run(key, lambda: "charged", wait_timeout=LOCK_TTL * 4) == "charged"


# -- outcome unknown: a gunicorn worker SIGKILLed mid-request ------------------------------


@pytest.fixture(params=["refuse", "rerun"])
def gunicorn(
    request: pytest.FixtureRequest, redis_server: Any, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    env = server_env(
        redis_server.url,
        tmp_path / "db.sqlite3",
        DJANGO_SETTINGS_MODULE="tests.support.policy_settings",
        TEST_LOCK_TTL=str(LOCK_TTL),
        TEST_OUTCOME_UNKNOWN=request.param,
    )
    with serve_process("gunicorn", env, workers=2) as (port, _):
        yield request.param, port


@pytest.mark.slow
def test_a_sigkilled_worker_s_request_is_refused_or_run_again_as_the_policy_says(
    gunicorn: tuple[str, int], redis_client: redis.Redis
):
    policy, port = gunicorn
    key = str(uuid.uuid4())
    doomed = Call(partial(post, port, "/deploy/", key, 600, REQUEST_TIMEOUT))
    victim = eventually(lambda: starts(redis_client, key), REQUEST_TIMEOUT, "the view")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    eventually(lambda: gone(victim["pid"]), 10, "the worker to die")
    lost = doomed.outcome(REQUEST_TIMEOUT)
    assert not (isinstance(lost, Reply) and lost.status == 201), lost

    retry = post(port, "/deploy/", key, 0, REQUEST_TIMEOUT)
    if policy == "rerun":
        assert retry.status == 201 and not retry.replayed
        assert len(starts(redis_client, key)) == 2
        return
    # Refused after the lease ended, every time; the view never runs again.
    for reply in (retry, post(port, "/deploy/", key, 0, REQUEST_TIMEOUT)):
        assert reply.status == OutcomeUnknown.status, reply
        assert json.loads(reply.body)["type"].endswith(OutcomeUnknown.type_slug)
    assert len(starts(redis_client, key)) == 1
    (listed,) = inspect_json("--key-glob", key)
    assert listed["abandoned"] is True

    call_command("idempotency_inspect", "purge", key, "--yes", stdout=io.StringIO())
    resolved = post(port, "/deploy/", key, 0, REQUEST_TIMEOUT)
    assert resolved.status == 201 and not resolved.replayed
    again = post(port, "/deploy/", key, 0, REQUEST_TIMEOUT)
    assert again.status == 201 and again.replayed and again.body == resolved.body
    assert len(starts(redis_client, key)) == 2


@pytest.mark.django_db(transaction=True)
def test_a_durable_row_committed_before_the_owner_died_answers_instead_of_a_refusal(
    redis_client,
):
    from .support.models import Execution

    key = f"charge-{uuid.uuid4()}"

    def charge() -> int:
        return int(Execution.objects.create(key=key).pk)

    first = run(key, charge, durable=True, outcome_unknown="refuse")
    # As if the owner had died after its commit, before Redis got the outcome: Redis
    # holds only its running record, whose lease nobody renews.
    redis_client.flushall()
    abandon(key, lease=0.2)
    eventually(lambda: inspect_json("--key-glob", key)[0]["abandoned"], 10, "the lease to end")

    with pytest.raises(OutcomeUnknown):
        run(key, charge, outcome_unknown="refuse")  # not durable: nothing says what happened
    assert run(key, charge, durable=True, outcome_unknown="refuse") == first
    assert Execution.objects.filter(key=key).count() == 1


# -- outcome unknown: a Celery worker process SIGKILLed inside the job ---------------------


@pytest.mark.slow
@pytest.mark.usefixtures("celery_worker")
def test_a_killed_celery_job_is_refused_under_refuse_not_run_again():
    from .support import jobs
    from .test_celery import counts
    from .test_celery import starts as job_starts

    label = uuid.uuid4().hex
    result = jobs.long_first_run_refusing.apply_async((label,))
    ((_, owner_pid),) = eventually(lambda: job_starts(label), 60, "the first run")
    os.kill(owner_pid, signal.SIGKILL)
    # acks_late: the message comes back; once the dead owner's lease ends it is refused.
    with pytest.raises(OutcomeUnknown):
        result.get(timeout=60)
    assert counts(label)[1] == 1


def abandon(key: str, lease: float) -> None:
    """Leave ``key`` as a dead owner would: claimed under the refuse policy, never renewed.

    For what a killed process cannot show: a row committed before the death (durable),
    and the in-memory store, which lives in this one process.
    """
    from django_idempotency.engine import Claim
    from django_idempotency.events import Door
    from django_idempotency.options import Conflict
    from django_idempotency.policies import OutcomeUnknownPolicy
    from django_idempotency.records import Kind
    from django_idempotency.runtime import get_engine
    from django_idempotency.steps import drive

    engine = get_engine()
    claim = drive(
        engine.context,
        engine.acquiring(
            Kind.RUN,
            Door.RUN,
            "",
            key,
            b"",
            lock_ttl=lease,
            wait_timeout=1,
            conflict=Conflict.WAIT,
            outcome_unknown=OutcomeUnknownPolicy.REFUSE,
            ttl=60,
        ),
    )
    assert isinstance(claim, Claim)
    engine.keeper.drop(claim.lease)


@pytest.mark.no_redis
def test_the_in_memory_store_keeps_and_refuses_an_abandoned_record_too(settings):
    settings.IDEMPOTENCY = {"STORE": "django_idempotency.stores.memory.open_store"}
    key = f"charge-{uuid.uuid4()}"
    abandon(key, lease=0.2)
    eventually(lambda: inspect_json("--key-glob", key)[0]["abandoned"], 10, "the lease to end")
    out = io.StringIO()
    call_command("idempotency_inspect", "show", key, "--json", stdout=out)
    (shown,) = json.loads(out.getvalue())
    assert shown["abandoned"] is True and shown["lease_seconds"] == 0
    with pytest.raises(OutcomeUnknown):
        run(key, lambda: "charged")
    call_command("idempotency_inspect", "purge", key, "--yes", stdout=io.StringIO())
    assert run(key, lambda: "charged") == "charged"
