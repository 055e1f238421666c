"""Views and URLs of the benchmark project: one small JSON endpoint per door."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import django_idempotency
from django_idempotency import signals
from django_idempotency.drf import IdempotentMixin

PAYLOAD = {"id": 1234, "status": "created", "amount": 100, "currency": "EUR"}


def plain(request: HttpRequest) -> JsonResponse:
    """Create something: parse the JSON body, answer with a small JSON document."""
    data = json.loads(request.body)
    return JsonResponse({**PAYLOAD, "amount": data["amount"]})


def slow(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    time.sleep(int(request.GET.get("ms", "200")) / 1000)
    return JsonResponse({**PAYLOAD, "amount": data["amount"]})


def sized(request: HttpRequest) -> HttpResponse:
    """A body of exactly ``?bytes=N`` bytes, for the memory measurement."""
    return HttpResponse(b"x" * int(request.GET["bytes"]), content_type="application/json")


def ping(request: HttpRequest) -> JsonResponse:
    """Liveness, and which django_idempotency this server imported."""
    return JsonResponse({"ok": True, "code": os.path.dirname(django_idempotency.__file__)})


class DRFView(APIView):
    def post(self, request: Request) -> Response:
        return Response({**PAYLOAD, "amount": request.data["amount"]})


class DRFMixinView(IdempotentMixin, APIView):
    def post(self, request: Request) -> Response:
        return Response({**PAYLOAD, "amount": request.data["amount"]})


class StormClockMiddleware:
    """Storm only: report when the owner stored its response and when a waiter replayed.

    Receivers of ``executed`` / ``replayed`` note ``time.time()`` on the request; the
    times go back as response headers, so the waiters' delay after completion is
    measured without any extra Redis command.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        signals.executed.connect(self._stamp("stored"), weak=False)
        signals.replayed.connect(self._stamp("replayed"), weak=False)

    @staticmethod
    def _stamp(what: str) -> Callable[..., None]:
        def receiver(request: Any = None, **kwargs: Any) -> None:
            if request is not None:
                request.bench_clock = (what, time.time())

        return receiver

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        clock = getattr(request, "bench_clock", None)
        if clock is not None:
            response[f"X-Bench-{clock[0]}-At"] = repr(clock[1])
        return response


urlpatterns = [
    path("ping/", ping),
    path("plain/", plain),
    path("slow/", slow),
    path("sized/", sized),
    path("drf/", DRFView.as_view()),
    path("drf-mixin/", DRFMixinView.as_view()),
]
