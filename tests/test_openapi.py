"""The idempotency contract in drf-spectacular's schema, where a door protects, and only there.

Two projects. The example project's own schema (``manage.py spectacular``, its settings as
they are): ``POST /api/charges/`` (the mixin, key required) documents the contract, its
reads do not. And views of every door in this module, with and without the middleware:
each operation the schema marks as protected is protected when requested (a malformed
key gets 400 problem+json, a missing key 400 where the schema says required), and each
operation it leaves alone is left alone by the doors too, and is exactly what
drf-spectacular makes without this package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import include, path
from django.utils.decorators import method_decorator
from drf_spectacular.generators import SchemaGenerator as PlainGenerator
from rest_framework import routers, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from django_idempotency import idempotency_exempt, idempotent_view
from django_idempotency.conf import get_settings
from django_idempotency.drf import IdempotentMixin
from django_idempotency.openapi import PROBLEM_COMPONENT, SchemaGenerator

pytestmark = pytest.mark.no_redis

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
PROBLEM = "application/problem+json"
MIDDLEWARE = "django_idempotency.middleware.IdempotencyMiddleware"
MANAGE_SPECTACULAR = [
    sys.executable,
    "manage.py",
    "spectacular",
    "--fail-on-warn",
    "--format",
    "openapi-json",
]


class NoteSerializer(serializers.Serializer):
    text = serializers.CharField(required=False)


def answer(view: Any, request: Any, *args: Any, **kwargs: Any) -> Response:
    return Response({"ok": True}, status=201 if request.method == "POST" else 200)


class Open:
    """Anyone may call: the doors, not DRF's permissions, decide what is refused."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    serializer_class = NoteSerializer


class Notes(Open, GenericAPIView):
    """No door of its own: the middleware's, where it is installed."""

    get = post = put = patch = answer


class Exempt(Open, GenericAPIView):
    post = answer


class Decorated(Open, GenericAPIView):
    """Its view function is wrapped in @idempotent_view (see urlpatterns)."""

    get = post = put = patch = answer


@method_decorator(idempotent_view(required=True), name="dispatch")
class Dispatched(Open, GenericAPIView):
    """Decorated on dispatch (as_view() hands the marks to its view function)."""

    get = post = answer


class Charges(Open, IdempotentMixin, viewsets.GenericViewSet):
    idempotency_actions = {"create"}

    list = create = answer

    @action(detail=False, methods=["post"])
    def refund(self, request: Any) -> Response:
        return answer(self, request)


router = routers.SimpleRouter()
router.register("charges", Charges, basename="charge")

urlpatterns = [
    path("notes/", Notes.as_view()),
    path("exempt/", idempotency_exempt(Exempt.as_view())),
    path(
        "decorated/",
        idempotent_view(required=True, conflict="reject", methods=["POST", "PUT"])(
            Decorated.as_view()
        ),
    ),
    path("dispatched/", Dispatched.as_view()),
    path("kept-briefly/", idempotent_view(ttl=60)(Notes.as_view())),
    path("", include(router.urls)),
]


def operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (route, method): op for route, ops in schema["paths"].items() for method, op in ops.items()
    }


def key_parameters(operation: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in operation.get("parameters", []) if p["name"] == "Idempotency-Key"]


def assert_documents_the_contract(schema: dict[str, Any], operation: dict[str, Any]) -> bool:
    """The contract is all there; returns whether the key is documented as required."""
    (key,) = key_parameters(operation)
    assert key["in"] == "header"
    responses = operation["responses"]
    problem_ref = {"$ref": f"#/components/schemas/{PROBLEM_COMPONENT}"}
    for status in ("400", "409", "422", "503"):
        assert responses[status]["content"][PROBLEM]["schema"] == problem_ref, status
    assert "Retry-After" in responses["409"]["headers"]
    assert "Retry-After" in responses["503"]["headers"]
    assert set(schema["components"]["schemas"][PROBLEM_COMPONENT]["properties"]) >= {
        "type",
        "title",
        "status",
        "detail",
    }
    own = [s for s, r in responses.items() if PROBLEM not in r.get("content", {})]
    assert own, "the view's own responses are kept"
    for status in own:
        assert "Idempotent-Replayed" in responses[status]["headers"], status
    return bool(key["required"])


def assert_untouched(operation: dict[str, Any], plain: dict[str, Any]) -> None:
    assert not key_parameters(operation)
    assert operation == plain


def generate(generator: type[PlainGenerator]) -> dict[str, Any]:
    schema: dict[str, Any] = generator(urlconf=sys.modules[__name__]).get_schema(
        request=None, public=True
    )
    return schema


def enforced(client: Client, route: str, method: str) -> tuple[bool, bool]:
    """Whether the doors protect this operation, and whether they require a key."""

    def send(key: str | None) -> Any:
        headers = {} if key is None else {"Idempotency-Key": key}
        return client.generic(
            method.upper(), route, b"{}", content_type="application/json", headers=headers
        )

    too_long = send("k" * (get_settings().MAX_KEY_LENGTH + 1))
    protected = too_long.status_code == 400 and too_long["Content-Type"] == PROBLEM
    missing = send(None)
    required = missing.status_code == 400 and missing["Content-Type"] == PROBLEM
    return protected, required


def sent_problem(client: Client, route: str, method: str) -> dict[str, Any]:
    """The problem document the doors send for a malformed key here."""
    response = client.generic(
        method.upper(),
        route,
        b"{}",
        content_type="application/json",
        headers={"Idempotency-Key": "k" * (get_settings().MAX_KEY_LENGTH + 1)},
    )
    document: dict[str, Any] = json.loads(response.content)
    return document


@pytest.mark.parametrize("with_middleware", [True, False], ids=["middleware", "no-middleware"])
def test_every_protected_operation_documents_the_contract_and_no_other(settings, with_middleware):
    settings.ROOT_URLCONF = __name__
    settings.REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
    others = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE]
    settings.MIDDLEWARE = [*others, MIDDLEWARE] if with_middleware else others

    schema = generate(SchemaGenerator)
    plain = operations(generate(PlainGenerator))
    client = Client()
    documented, seen = {}, {}
    for (route, method), operation in operations(schema).items():
        if key_parameters(operation):
            documented[route, method] = assert_documents_the_contract(schema, operation)
            # The example is the problem the server sends (but for its detail).
            example = operation["responses"]["400"]["content"][PROBLEM]["examples"]
            shown = example["invalid-key"]["value"]
            sent = sent_problem(client, route, method)
            assert {k: shown[k] for k in ("type", "title", "status")} == {
                k: sent[k] for k in ("type", "title", "status")
            }
        else:
            assert_untouched(operation, plain[route, method])
        protected, required = enforced(client, route, method)
        if protected:
            seen[route, method] = required

    assert documented == seen
    # Each door is represented: the schema is not right by having nothing to say.
    assert documented[("/decorated/", "post")] is True
    assert documented[("/dispatched/", "post")] is True
    assert documented[("/charges/", "post")] is False
    assert ("/charges/refund/", "post") not in documented
    assert ("/exempt/", "post") not in documented
    if with_middleware:
        assert ("/notes/", "patch") in documented
        assert ("/notes/", "put") not in documented
    else:
        assert ("/notes/", "post") not in documented


@pytest.mark.slow
def test_the_example_projects_schema_documents_the_charges_api(tmp_path):
    out = tmp_path / "schema.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The schema needs no Redis: an address nothing listens on keeps manage.py from
    # starting its private server.
    env["REDIS_URL"] = "redis://127.0.0.1:9/0"
    subprocess.run(
        [*MANAGE_SPECTACULAR, "--file", str(out)],
        check=True,
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
    )
    schema = json.loads(out.read_text())
    ops = operations(schema)
    protected = {k for k, op in ops.items() if key_parameters(op)}
    assert protected == {("/api/charges/", "post")}
    assert assert_documents_the_contract(schema, ops["/api/charges/", "post"]) is True
    for key in set(ops) - protected:
        for response in ops[key]["responses"].values():
            assert PROBLEM not in response.get("content", {}), key
            assert "Idempotent-Replayed" not in response.get("headers", {}), key


def test_the_contract_follows_the_settings(settings):
    settings.ROOT_URLCONF = __name__
    settings.REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
    base = "https://example.com/problems/"
    settings.IDEMPOTENCY = {
        **settings.IDEMPOTENCY,
        "ON_REDIS_ERROR": "fail_open",
        "OUTCOME_UNKNOWN": "refuse",
        "STORE_RESPONSES": [202],
        "DRF_EXCEPTION_HANDLER": True,
        "PROBLEM_TYPE_BASE": base,
    }
    ops = operations(generate(SchemaGenerator))
    decorated = ops["/decorated/", "post"]["responses"]
    # fail_open: a store that is down lets the view run, so there is no 503.
    assert "503" not in decorated
    assert "outcome-unknown" in decorated["409"]["content"][PROBLEM]["examples"]
    for status in ("400", "409", "422"):
        for example in decorated[status]["content"][PROBLEM]["examples"].values():
            assert example["value"]["type"].startswith(base)
    # Only 202s are stored: the view's own 201 is never a replay.
    own = [s for s, r in decorated.items() if PROBLEM not in r.get("content", {})]
    assert own and all("Idempotent-Replayed" not in decorated[s].get("headers", {}) for s in own)

    # The mixin's refusals go to DRF's exception handler: statuses without a problem body.
    charges = ops["/charges/", "post"]["responses"]
    for status in ("400", "409", "422"):
        assert PROBLEM not in charges[status].get("content", {}), status
        assert charges[status]["description"]
    response = Client().post(
        "/charges/", b"{}", content_type="application/json", headers={"Idempotency-Key": ""}
    )
    assert response.status_code == 400 and response["Content-Type"] != PROBLEM


def test_the_key_parameter_states_the_doors_own_ttl(settings):
    settings.ROOT_URLCONF = __name__
    settings.REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "TTL": 86400}
    ops = operations(generate(SchemaGenerator))

    def kept_for(op: dict[str, Any]) -> str:
        (key,) = [p for p in op["parameters"] if p["in"] == "header"]
        return key["description"].split("Kept for ", 1)[1].split(" s ", 1)[0]

    assert kept_for(ops["/kept-briefly/", "post"]) == "60"
    assert kept_for(ops["/decorated/", "post"]) == "86400"
