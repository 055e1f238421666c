"""One options model: every door takes the same types and refuses bad values up front.

For each door: a ``timedelta`` is accepted (and applied), a negative duration, an
unknown option and a bad ``conflict`` are refused before anything runs, and the error
names where the value came from.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

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
    assert 25_000 < redis_client.pttl(name_of(Kind.CALL, "", "timed")) <= 30_000
