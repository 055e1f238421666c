"""Views for the policy tests (tests/test_policies.py): an order endpoint that answers
400 without an ``item`` and 201 with one, behind each HTTP door."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import engines
from django.template.response import TemplateResponse
from rest_framework.response import Response
from rest_framework.views import APIView

from django_idempotency import idempotent_view
from django_idempotency.drf import IdempotentMixin

#: Every execution, by path (the tests clear it).
calls: list[str] = []


def _order(path: str, body: bytes) -> tuple[dict[str, Any], int]:
    calls.append(path)
    if "item" not in json.loads(body or b"{}"):
        return {"item": ["This field is required."]}, 400
    return {"order": len(calls)}, 201


def middleware_order(request: HttpRequest) -> HttpResponse:
    """Covered by the middleware (the suite's settings install it)."""
    doc, status = _order(request.path, request.body)
    return JsonResponse(doc, status=status)


@idempotent_view
def decorated_order(request: HttpRequest) -> HttpResponse:
    doc, status = _order(request.path, request.body)
    return JsonResponse(doc, status=status)


@idempotent_view(store_responses="2xx")
def decorated_order_2xx(request: HttpRequest) -> HttpResponse:
    doc, status = _order(request.path, request.body)
    return JsonResponse(doc, status=status)


def stored_when_marked(response: HttpResponse) -> bool:
    """A policy that reads the body: only responses saying ``store-me`` are kept."""
    return b"store-me" in response.content


@idempotent_view(store_responses="tests.support.policy_views.stored_when_marked")
def rendered_order(request: HttpRequest) -> HttpResponse:
    """A template response, rendered only after the view returned."""
    calls.append(request.path)
    body = "store-me" if b"mark" in request.body else "skip"
    return TemplateResponse(request, engines["django"].from_string("{{ body }}"), {"body": body})


class MixinOrders(IdempotentMixin, APIView):
    authentication_classes: list[Any] = []

    def post(self, request: Any) -> Response:
        doc, status = _order(request.path, request.body)
        return Response(doc, status=status)


class MixinOrders2xx(MixinOrders):
    idempotency_options = {"store_responses": "2xx"}


class RequiredOrders(MixinOrders):
    idempotency_required = True


def envelope_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """A project's own DRF error envelope: ``{"error": {"code", "message"}}``."""
    from rest_framework.views import exception_handler

    response = exception_handler(exc, context)
    if response is not None:
        code = getattr(exc, "default_code", "error")
        codes = exc.get_codes() if hasattr(exc, "get_codes") else code
        response.data = {"error": {"code": codes, "message": str(exc)}}
    return response
