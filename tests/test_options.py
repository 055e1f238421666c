"""One options model: every door takes the same types and refuses bad values up front.

For each door: a ``timedelta`` is accepted (and applied), a negative duration, an
unknown option and a bad ``conflict`` are refused before anything runs, and the error
names where the value came from.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from django_idempotency import InvalidOption, arun, idempotent_view, run
from django_idempotency.conf import build
from django_idempotency.drf import IdempotentMixin
from django_idempotency.records import Kind

from .support.records import name_of

BAD = [
    ({"ttl": -5}, "ttl", "positive number of seconds"),
    ({"bogus": 1}, "bogus", "not an option"),
    ({"conflict": "bogus"}, "conflict", '"wait", "reject"'),
    ({"lock_ttl": "10"}, "lock_ttl", "positive number of seconds"),
    ({"durable": "yes"}, "durable", "True or False"),
]


def view(request: Any) -> Any:
    return None


@pytest.mark.no_redis
@pytest.mark.parametrize("options, name, what", BAD)
def test_the_decorator_refuses_bad_options_when_decorating(options, name, what):
    with pytest.raises(InvalidOption, match=rf"@idempotent_view\({name}=\.\.\.\).*{what}"):
        idempotent_view(**options)(view)


@pytest.mark.no_redis
@pytest.mark.parametrize("options, name, what", BAD)
def test_the_mixin_refuses_bad_options_when_the_class_is_created(options, name, what):
    with pytest.raises(InvalidOption, match=rf'Charges.idempotency_options\["{name}"\].*{what}'):

        class Charges(IdempotentMixin, APIView):
            idempotency_options = options


@pytest.mark.no_redis
def test_the_mixin_refuses_bad_attributes_when_the_class_is_created():
    with pytest.raises(InvalidOption, match=r"Charges.idempotency_required"):

        class Charges(IdempotentMixin, APIView):
            idempotency_required = "yes"  # type: ignore[assignment]

    with pytest.raises(InvalidOption, match=r"Charges2.idempotency_methods"):

        class Charges2(IdempotentMixin, APIView):
            idempotency_methods = ["FETCH"]

    with pytest.raises(InvalidOption, match=r"Charges3.idempotency_options must be a dict"):

        class Charges3(IdempotentMixin, APIView):
            idempotency_options = ["ttl"]  # type: ignore[assignment]


@pytest.mark.no_redis
def test_a_misspelled_action_is_refused_naming_the_class_and_the_action():
    with pytest.raises(
        ImproperlyConfigured,
        match=r"Orders.idempotency_actions names 'craete'.*"
        r"did you mean 'create'\?",
    ):

        class Orders(IdempotentMixin, viewsets.ModelViewSet):
            idempotency_actions = {"craete"}
            idempotency_required = True


@pytest.mark.no_redis
def test_actions_may_name_routed_and_extra_actions_and_only_on_viewsets():
    class Refunds(IdempotentMixin, viewsets.GenericViewSet):
        idempotency_actions = {"create", "refund"}

        def create(self, request: Any) -> Any:
            return None

        @action(detail=True, methods=["post"])
        def refund(self, request: Any, pk: Any = None) -> Any:
            return None

    assert Refunds._idempotency_actions == frozenset({"create", "refund"})
    with pytest.raises(
        InvalidOption, match=r"'destroy', which is not an action of .*Refunds2 \(it has none\)"
    ):

        class Refunds2(IdempotentMixin, viewsets.GenericViewSet):
            idempotency_actions = {"destroy"}  # GenericViewSet routes nothing by itself

    with pytest.raises(InvalidOption, match=r"Charges4.idempotency_actions applies to viewsets"):

        class Charges4(IdempotentMixin, APIView):
            idempotency_actions = {"create"}


@pytest.mark.parametrize("options, name, what", BAD)
def test_run_refuses_bad_options_before_running(options, name, what, redis_client):
    ran: list[int] = []
    with pytest.raises(InvalidOption, match=rf"run\({name}=\.\.\.\).*{what}"):
        run("k", lambda: ran.append(1), **options)
    assert ran == []
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("options, name, what", BAD)
def test_arun_refuses_bad_options_before_running(options, name, what, redis_client):
    ran: list[int] = []

    async def action() -> None:
        ran.append(1)

    with pytest.raises(InvalidOption, match=rf"arun\({name}=\.\.\.\).*{what}"):
        asyncio.run(arun("k", action, **options))
    assert ran == []


@pytest.mark.no_redis
@pytest.mark.parametrize(
    "setting, value", [("TTL", -5), ("CONFLICT", "bogus"), ("LOCK_TTL", "10"), ("DURABLE", "yes")]
)
def test_settings_refuse_the_same_bad_values_naming_the_key(setting, value):
    with pytest.raises(ImproperlyConfigured, match=rf'IDEMPOTENCY\["{setting}"\]'):
        build({setting: value})


@pytest.mark.no_redis
def test_every_door_accepts_the_same_duration_types():
    for value in (60, 60.0, timedelta(minutes=1)):
        assert build({"TTL": value}).TTL == 60.0
        idempotent_view(ttl=value, lock_ttl=value)(view)

        class Charges(IdempotentMixin, APIView):
            idempotency_options = {"ttl": value, "wait_timeout": value}


@idempotent_view(ttl=timedelta(seconds=40))
def forty_seconds(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse("ok", status=201)


class MixinTwentySeconds(IdempotentMixin, APIView):
    idempotency_options = {"ttl": timedelta(seconds=20)}

    def post(self, request: Any) -> Any:
        return Response({"ok": True}, status=201)


def test_timedelta_options_are_applied_by_every_door(redis_client, rf):
    from django.contrib.auth.models import AnonymousUser

    request = rf.post("/", headers={"Idempotency-Key": "decorated"})
    request.user = AnonymousUser()
    assert forty_seconds(request).status_code == 201
    assert 35_000 < redis_client.pttl(name_of(Kind.HTTP, "anonymous", "decorated")) <= 40_000

    request = rf.post("/", headers={"Idempotency-Key": "mixin"})
    assert MixinTwentySeconds.as_view()(request).status_code == 201
    assert 15_000 < redis_client.pttl(name_of(Kind.HTTP, "anonymous", "mixin")) <= 20_000

    run("timed", lambda: 1, ttl=timedelta(seconds=30))
    assert 25_000 < redis_client.pttl(name_of(Kind.RUN, "", "timed")) <= 30_000


# -- the audit: every option of every door, refused when bad, refused where not taken ------

#: A bad value of every option, and what the error says it must be.
EVERY_BAD: dict[str, tuple[Any, str]] = {
    "ttl": (-5, "positive number of seconds"),
    "lock_ttl": ("10", "positive number of seconds"),
    "wait_timeout": (0, "positive number of seconds"),
    "conflict": ("queue", '"wait", "reject"'),
    "durable": ("yes", "True or False"),
    "methods": (["FETCH"], "list of HTTP method names"),
    "required": (1, "True or False"),
    "scope": (42, "a callable"),
    "fingerprint": ("no.such.fingerprint", "importable dotted path"),
    "store_responses": ("2xx-6xx", "status range"),
    "outcome_unknown": ("retry", '"rerun", "refuse"'),
    "value_serializer": ("json", "importable dotted path"),
    "error_serializer": (object(), "serializer with dumps"),
    "should_ignore_error": (42, "a callable"),
    "on_action_success": (42, "a callable"),
    "on_action_error": ("log", "a callable"),
    "on_success_replay": (42, "a callable"),
    "on_error_replay": (42, "a callable"),
}


#: The same for run() and the job doors, where an option's validator is theirs alone.
RUN_BAD: dict[str, tuple[Any, str]] = {**EVERY_BAD, "scope": (42, "a string")}


def taken_by(kind: str) -> list[str]:
    from django_idempotency.options import SPECS

    return sorted(name for name, spec in SPECS.items() if kind in spec.kinds)


def not_taken_by(kind: str) -> list[str]:
    from django_idempotency.options import SPECS

    return sorted(name for name, spec in SPECS.items() if kind not in spec.kinds)


@pytest.mark.no_redis
def test_the_audit_covers_every_option_and_every_option_is_applied():
    from dataclasses import fields

    from django_idempotency.options import SETTINGS_ONLY, SPECS, HttpOptions, RunOptions

    assert set(EVERY_BAD) == set(SPECS)
    # Each option a door takes is a field of what that door applies: none is accepted
    # and dropped on the way to the request or call.
    applied = {"http": {f.name for f in fields(HttpOptions)}, "run": set()}
    applied["run"] = {f.name for f in fields(RunOptions)}
    for name, spec in SPECS.items():
        for kind in spec.kinds:
            assert name in applied[kind], (name, kind)
    # The other fields come from the settings alone, and no door takes them as options.
    assert applied["http"] | applied["run"] == set(SPECS) | set(SETTINGS_ONLY)
    assert not set(SPECS) & set(SETTINGS_ONLY)


@pytest.mark.no_redis
@pytest.mark.parametrize("name", taken_by("http"))
def test_every_http_option_is_checked_by_the_decorator_and_the_mixin(name):
    value, what = EVERY_BAD[name]
    with pytest.raises(InvalidOption, match=rf"@idempotent_view\({name}=\.\.\.\).*{what}"):
        idempotent_view(**{name: value})(view)
    with pytest.raises(InvalidOption, match=rf'Orders.idempotency_options\["{name}"\].*{what}'):

        class Orders(IdempotentMixin, APIView):
            idempotency_options = {name: value}


@pytest.mark.no_redis
@pytest.mark.parametrize("name", not_taken_by("http"))
def test_an_option_the_http_doors_do_not_use_is_refused_not_ignored(name):
    with pytest.raises(InvalidOption, match=rf"@idempotent_view\({name}=\.\.\.\) is not an option"):
        idempotent_view(**{name: print})(view)
    with pytest.raises(InvalidOption, match=rf'Orders.idempotency_options\["{name}"\] is not an'):

        class Orders(IdempotentMixin, APIView):
            idempotency_options = {name: print}


@pytest.mark.parametrize("name", taken_by("run"))
def test_every_call_option_is_checked_by_run_arun_and_the_job_doors(name, redis_client):
    value, what = RUN_BAD[name]
    ran: list[int] = []

    async def action() -> None:
        ran.append(1)

    with pytest.raises(InvalidOption, match=rf"run\({name}=\.\.\.\).*{what}"):
        run("k", lambda: ran.append(1), **{name: value})
    with pytest.raises(InvalidOption, match=rf"arun\({name}=\.\.\.\).*{what}"):
        asyncio.run(arun("k", action, **{name: value}))
    from django_idempotency.celery import IdempotentTask

    with pytest.raises(InvalidOption, match=rf"BadTask\.idempotency_{name}.*{what}"):
        type("BadTask", (IdempotentTask,), {f"idempotency_{name}": value})
    assert ran == []
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("name", not_taken_by("run"))
def test_an_option_run_and_the_job_doors_do_not_use_is_refused_not_ignored(name, redis_client):
    given: dict[str, Any] = {name: print}
    with pytest.raises(InvalidOption, match=rf"run\({name}=\.\.\.\) is not an option"):
        run("k", lambda: None, **given)
    from django_idempotency.celery import IdempotentTask

    with pytest.raises(InvalidOption, match=rf"BadTask\.idempotency_{name} is not an option"):
        type("BadTask", (IdempotentTask,), {f"idempotency_{name}": print})
    assert redis_client.dbsize() == 0


@pytest.mark.no_redis
@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks needs Django 6.0+")
@pytest.mark.parametrize("name", sorted(EVERY_BAD))
def test_the_django_tasks_door_checks_every_option_when_decorating(name):
    from django_idempotency.tasks import idempotent

    value, what = RUN_BAD[name]
    expected = what if name in taken_by("run") else "is not an option"
    with pytest.raises(InvalidOption, match=rf"{name}=\.\.\..*{expected}"):
        idempotent(**{name: value})


@pytest.mark.no_redis
def test_the_mixin_refuses_an_option_given_twice():
    for name, value in (("methods", ["POST"]), ("required", True)):
        with pytest.raises(InvalidOption, match=rf"Twice sets {name} twice"):
            type(
                "Twice",
                (IdempotentMixin, APIView),
                {"idempotency_options": {name: value}, f"idempotency_{name}": value},
            )


@pytest.mark.no_redis
def test_the_store_policy_takes_ranges_sets_and_callables_and_nothing_else():
    from django.http import HttpResponse

    from django_idempotency.options import store_responses

    def answer(status: int) -> HttpResponse:
        return HttpResponse(status=status)

    two_to_three = store_responses("2xx-3xx", "x")
    assert [two_to_three(answer(s)) for s in (200, 302, 400, 500)] == [True, True, False, False]
    assert [store_responses("4xx", "x")(answer(s)) for s in (399, 400, 499, 500)] == [
        False,
        True,
        True,
        False,
    ]
    assert [store_responses({201, 409}, "x")(answer(s)) for s in (200, 201, 409)] == [
        False,
        True,
        True,
    ]
    assert store_responses(only_created, "x") is only_created
    for bad in ("3xx-2xx", "1xx", "2XX", "200", [], [99], [True], {200: 1}, 200):
        with pytest.raises(InvalidOption, match=r"x must be a status range"):
            store_responses(bad, "x")


def only_created(response: Any) -> bool:
    return bool(response.status_code == 201)


@pytest.mark.no_redis
def test_merged_options_follow_a_settings_change_after_their_first_use(settings):
    from django_idempotency.options import Overrides

    overrides = Overrides({"ttl": 60})
    settings.IDEMPOTENCY = {"HEADER": "X-Request-Key", "ON_REDIS_ERROR": "fail_open"}
    first = overrides.http()
    assert overrides.http() is first  # merged once, not per request
    assert (first.ttl, first.header_meta_key, first.fail_open) == (60, "HTTP_X_REQUEST_KEY", True)
    assert overrides.run().fail_open
    settings.IDEMPOTENCY = {"REPLAY_HEADER": "X-Replayed", "TTL": 5}
    again = overrides.http()
    assert (again.ttl, again.header_meta_key, again.fail_open) == (
        60,
        "HTTP_IDEMPOTENCY_KEY",
        False,
    )
    assert again.replay_header == "X-Replayed"
    assert not overrides.run().fail_open
