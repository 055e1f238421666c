"""Views and URLs of the benchmark project: one small JSON endpoint per door."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import django_idempotency
from benchmarks import clock
from benchmarks.bodies import incompressible, typical_json
from django_idempotency.drf import IdempotentMixin

PAYLOAD = {"id": 1234, "status": "created", "amount": 100, "currency": "EUR"}


def plain(request: HttpRequest) -> JsonResponse:
    """Create something: parse the JSON body, answer with a small JSON document."""
    data = json.loads(request.body)
    return JsonResponse({**PAYLOAD, "amount": data["amount"]})


async def aplain(request: HttpRequest) -> JsonResponse:
    """:func:`plain` as an async view: under ASGI no request goes through a thread."""
    data = json.loads(request.body)
    return JsonResponse({**PAYLOAD, "amount": data["amount"]})


def slow(request: HttpRequest) -> JsonResponse:
    """:func:`plain` that takes ``?ms=N`` milliseconds (a storm's owner)."""
    data = json.loads(request.body)
    time.sleep(int(request.GET.get("ms", "200")) / 1000)
    return JsonResponse({**PAYLOAD, "amount": data["amount"]})


async def aslow(request: HttpRequest) -> JsonResponse:
    """:func:`slow` as an async view (the middleware runs in async mode under ASGI)."""
    data = json.loads(request.body)
    await asyncio.sleep(int(request.GET.get("ms", "200")) / 1000)
    return JsonResponse({**PAYLOAD, "amount": data["amount"]})


_gates: dict[str, Any] = {}
_gates_lock = threading.Lock()


def _gate_headers(response: HttpResponseBase, outcome: str, at: float) -> HttpResponseBase:
    response["X-Bench-Outcome"] = outcome
    response["X-Bench-At"] = repr(at)
    response["X-Bench-Pid"] = str(os.getpid())
    return response


def gate(request: HttpRequest) -> HttpResponseBase:
    """The storm's floor under WSGI: no idempotency, one ``threading.Event`` per key.

    The first request of a key sleeps ``?ms=N`` and sets the event; every other request
    of that key waits on it and answers the same JSON. Headers as the storm middleware's.
    """
    key = request.headers["Idempotency-Key"]
    data = json.loads(request.body)
    with _gates_lock:
        event = _gates.get(key)
        first = event is None
        if first:
            event = _gates[key] = threading.Event()
    if first:
        time.sleep(int(request.GET.get("ms", "200")) / 1000)
        at = time.time()
        event.set()
    else:
        event.wait(60)
        at = time.time()
    response = JsonResponse({**PAYLOAD, "amount": data["amount"]})
    return _gate_headers(response, "executed" if first else "waited", at)


async def agate(request: HttpRequest) -> HttpResponseBase:
    """:func:`gate` under ASGI: one ``asyncio.Event`` per key, on the server's loop."""
    key = request.headers["Idempotency-Key"]
    data = json.loads(request.body)
    event = _gates.get(key)
    first = event is None
    if first:
        event = _gates[key] = asyncio.Event()
        await asyncio.sleep(int(request.GET.get("ms", "200")) / 1000)
        at = time.time()
        event.set()
    else:
        await event.wait()
        at = time.time()
    response = JsonResponse({**PAYLOAD, "amount": data["amount"]})
    return _gate_headers(response, "executed" if first else "waited", at)


def sized(request: HttpRequest) -> HttpResponse:
    """A body of exactly ``?bytes=N`` incompressible bytes, or ``?json=N`` typical JSON."""
    if "json" in request.GET:
        return HttpResponse(typical_json(int(request.GET["json"])), content_type="application/json")
    return HttpResponse(
        incompressible(int(request.GET["bytes"])), content_type="application/octet-stream"
    )


def ping(request: HttpRequest) -> JsonResponse:
    """Liveness, and which django_idempotency this server imported."""
    return JsonResponse(
        {"ok": True, "code": os.path.dirname(django_idempotency.__file__), "pid": os.getpid()}
    )


class DRFView(APIView):
    def post(self, request: Request) -> Response:
        return Response({**PAYLOAD, "amount": request.data["amount"]})


class DRFMixinView(IdempotentMixin, APIView):
    def post(self, request: Request) -> Response:
        return Response({**PAYLOAD, "amount": request.data["amount"]})


class StormClockMiddleware:
    """Storm only: what each request did, as response headers (see :mod:`benchmarks.clock`).

    ``X-Bench-Outcome`` (executed, waited, replayed), ``X-Bench-At`` (the owner's store
    time, or a waiter's decision time), ``X-Bench-Pid`` (the serving process) and
    ``X-Bench-Commands`` (the Redis commands this request sent). It sits outside the
    idempotency middleware and, like it, serves both WSGI and ASGI stacks without a
    thread hop.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        clock.install()
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        caller = clock.begin()
        response: HttpResponseBase = self.get_response(request)
        return _stamped(response, caller)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        caller = clock.begin()
        response: HttpResponseBase = await self.get_response(request)
        return _stamped(response, caller)


def _stamped(response: HttpResponseBase, caller: clock.Caller) -> HttpResponseBase:
    for name, value in caller.headers().items():
        response[name] = value
    return response


urlpatterns = [
    path("ping/", ping),
    path("plain/", plain),
    path("aplain/", aplain),
    path("slow/", slow),
    path("aslow/", aslow),
    path("gate/", gate),
    path("agate/", agate),
    path("sized/", sized),
    path("drf/", DRFView.as_view()),
    path("drf-mixin/", DRFMixinView.as_view()),
]
