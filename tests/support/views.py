"""Views behind the three doors, with switches (query parameters) for every path.

``?status=N`` answer N; ``?raise=1`` raise; ``?stream=1`` stream; ``?big=N`` a body of
N bytes (``?random=N``: N random, incompressible ones; ``?json=N``: a JSON list of
charges of about N bytes); ``?sleep=S`` sleep first;
``?db=1`` record the execution in the database;
``?rollback=1`` mark the surrounding transaction for rollback.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import time
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from django_idempotency import idempotency_exempt, idempotent_view
from django_idempotency.drf import IdempotentMixin

from .models import Execution

calls: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


class Boom(Exception):
    pass


def _side_effect(request: Any, door: str) -> dict[str, Any]:
    params = request.GET
    if "sleep" in params:
        time.sleep(float(params["sleep"]))
    with _lock:
        calls[door] += 1
        n = calls[door]
    if params.get("db"):
        Execution.objects.create(key=request.headers.get("Idempotency-Key", ""))
    if params.get("rollback"):
        transaction.set_rollback(True)
    if params.get("raise"):
        raise Boom("view failed")
    user = getattr(request, "user", None)
    return {
        "door": door,
        "n": n,
        "pid": os.getpid(),  # which server process ran it
        "user": getattr(user, "username", "") or "anonymous",
        "body": request.body.decode("utf-8", "replace")[:100] if door != "drf" else "",
    }


def typical_json(size: int) -> bytes:
    """A list of charges, as a payments API answers, of at least ``size`` bytes."""
    items: list[dict[str, Any]] = []
    while True:
        i = len(items)
        items.append(
            {
                "id": f"ch_3P{i:06d}Xk29aQ",
                "object": "charge",
                "amount": 1999 + i * 7,
                "amount_refunded": 0,
                "currency": "eur",
                "customer": f"cus_Q{i * 31:07d}",
                "description": f"Order #{10400 + i}",
                "created": 1764700000 + i * 61,
                "livemode": False,
                "paid": True,
                "status": "succeeded",
                "payment_method": f"pm_1P{i:05d}Z",
                "metadata": {"order_id": str(10400 + i), "channel": "web"},
                "receipt_email": f"customer{i}@example.com",
            }
        )
        body = json.dumps({"object": "list", "data": items, "has_more": True}).encode()
        if len(body) >= size:
            return body


def _respond(request: Any, data: dict[str, Any]) -> HttpResponse | StreamingHttpResponse:
    params = request.GET
    if params.get("stream"):
        return StreamingHttpResponse(iter([b"chunk-1 ", json.dumps(data).encode()]))
    if "big" in params:
        return HttpResponse(b"x" * int(params["big"]), content_type="text/plain")
    if "random" in params:  # incompressible
        return HttpResponse(os.urandom(int(params["random"])), content_type="text/plain")
    if "json" in params:  # a typical API list response of about that many bytes
        return HttpResponse(typical_json(int(params["json"])), content_type="application/json")
    response = JsonResponse(data, status=int(params.get("status", 201)))
    response.set_cookie("session-ish", f"cookie-{data['n']}")
    response["X-Run"] = str(data["n"])
    return response


def plain(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """Covered by the middleware only."""
    return _respond(request, _side_effect(request, "middleware"))


@idempotent_view
def decorated(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    return _respond(request, _side_effect(request, "decorator"))


@idempotent_view(required=True, ttl=60, conflict="reject")
def decorated_strict(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    return _respond(request, _side_effect(request, "decorator-strict"))


@idempotent_view
async def decorated_async(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(float(request.GET.get("sleep", 0)))
    with _lock:
        calls["async"] += 1
        n = calls["async"]
    return JsonResponse({"door": "async", "n": n}, status=201)


@idempotency_exempt
def exempt(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    return _respond(request, _side_effect(request, "exempt"))


@method_decorator(idempotent_view(methods=["POST", "PUT"]), name="dispatch")
class ClassBased(View):
    def put(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        return _respond(request, _side_effect(request, "cbv"))

    post = put


class DRFCharge(IdempotentMixin, APIView):
    def post(self, request: Any) -> Any:
        data = _side_effect(request, "drf")
        data["amount"] = request.data.get("amount")
        params = request.GET
        if params.get("stream") or {"big", "random", "json"} & set(params):
            return _respond(request, data)
        response = Response(data, status=int(params.get("status", 201)))
        response.set_cookie("session-ish", f"cookie-{data['n']}")
        response["X-Run"] = str(data["n"])
        return response

    patch = post


class DRFChargeViewSet(IdempotentMixin, viewsets.ViewSet):
    idempotency_actions = {"create"}
    idempotency_required = True

    def create(self, request: Any) -> Any:
        return Response(_side_effect(request, "viewset-create"), status=201)

    def partial_update(self, request: Any, pk: str) -> Any:
        return Response(_side_effect(request, "viewset-update"), status=200)


async def _async_side_effect(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(float(request.GET.get("sleep", 0)))
    row = await Execution.objects.acreate(key=request.headers.get("Idempotency-Key", ""))
    return JsonResponse({"execution": row.pk}, status=201)


async def async_plain(request: HttpRequest) -> HttpResponse:
    """An async view covered by the middleware (async mode under ASGI)."""
    return await _async_side_effect(request)


@idempotent_view
async def async_decorated(request: HttpRequest) -> HttpResponse:
    return await _async_side_effect(request)


def db_counted(request: HttpRequest) -> HttpResponse:
    """A sync view covered by the middleware that records each execution."""
    time.sleep(float(request.GET.get("sleep", 0)))
    row = Execution.objects.create(key=request.headers.get("Idempotency-Key", ""))
    return JsonResponse({"execution": row.pk}, status=201)


def _durable_work(request: Any) -> dict[str, Any]:
    """A durable view's side effect: one Execution row, written in the view's transaction.

    ``?fail=1`` raises after the write (the transaction rolls back). An
    ``X-Pause-Redis: MS`` header (headers are not part of the request's fingerprint, so a
    retry without it is the same request) pauses Redis writes (``CLIENT PAUSE MS
    WRITE``) before the view returns: the
    transaction then commits, but the Redis store that follows hangs until the pause
    ends, the window in which a crash loses the result from Redis.
    """
    time.sleep(float(request.GET.get("sleep", 0)))
    row = Execution.objects.create(key=f"{os.getpid()}:{request.headers.get('Idempotency-Key')}")
    if request.GET.get("fail"):
        raise RuntimeError("the view failed after its write")
    pause = request.headers.get("X-Pause-Redis")
    if pause:
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        client.client_pause(int(pause), all=False)
        client.close()
    return {"execution": row.pk, "pid": os.getpid()}


@idempotent_view(durable=True)
def durable_counted(request: HttpRequest) -> HttpResponse:
    """A durable view: its side effect and stored response share one transaction."""
    return JsonResponse(_durable_work(request), status=201)


class DurableDRF(IdempotentMixin, APIView):
    """The DRF mixin in durable mode (it opens the transaction itself)."""

    idempotency_options = {"durable": True}

    def post(self, request: Any) -> Any:
        return Response(_durable_work(request), status=201)


# The deployment matrix (tests/test_deploy.py): views that record every execution in Redis,
# where the test (another process) counts them, whichever server process ran them.

#: Redis keys of the deployment views, by Idempotency-Key: a list with one JSON entry per
#: execution, pushed as the view starts ({"pid", "at"}: ``time.monotonic()``, which is
#: system-wide on Linux, so comparable with the test's clock), and one per finished run.
DEPLOY_STARTS = "deploy:starts:{key}"
DEPLOY_DONE = "deploy:done:{key}"


def _deploy_redis() -> Any:
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def _deploy_start(key: str) -> int:
    """Record that the view started here and now; the execution's number (1, 2, ...)."""
    entry = json.dumps({"pid": os.getpid(), "at": time.monotonic()})
    return int(_deploy_redis().rpush(DEPLOY_STARTS.format(key=key), entry))


def _deploy_done(key: str, run: int) -> dict[str, Any]:
    _deploy_redis().rpush(DEPLOY_DONE.format(key=key), run)
    # A token drawn per execution: two executions can never answer the same body.
    return {"key": key, "run": run, "pid": os.getpid(), "token": os.urandom(8).hex()}


def deploy_counted(request: HttpRequest) -> HttpResponse:
    """GET: which process answers (a readiness probe). POST (protected by the middleware):
    record the execution, sleep ``X-Deploy-Sleep`` seconds (a header: not part of the
    request's fingerprint, so a retry without it is the same request), answer 201."""
    if request.method != "POST":
        return JsonResponse({"pid": os.getpid()})
    key = request.headers.get("Idempotency-Key", "")
    run = _deploy_start(key)
    time.sleep(float(request.headers.get("X-Deploy-Sleep", 0)))
    return JsonResponse(_deploy_done(key, run), status=201)


async def deploy_counted_async(request: HttpRequest) -> HttpResponse:
    """:func:`deploy_counted` as a coroutine (the middleware's async path under ASGI)."""
    from asgiref.sync import sync_to_async

    if request.method != "POST":
        return JsonResponse({"pid": os.getpid()})
    key = request.headers.get("Idempotency-Key", "")
    run = await sync_to_async(_deploy_start)(key)
    await asyncio.sleep(float(request.headers.get("X-Deploy-Sleep", 0)))
    return JsonResponse(await sync_to_async(_deploy_done)(key, run), status=201)
