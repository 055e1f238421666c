"""The edge's test project: its scope, views, URLs, a counting middleware, and the
applications servers load (``tests.support.edge_app:edge_wsgi`` and the like).

What happened inside the server is read back over HTTP from ``/edge/stats/``: how
many requests reached Django's middleware, and every outcome the signals reported (with
its door). One worker, so these counters are the server's.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from django_idempotency import signals
from django_idempotency.edge import asgi_app, headers_scope, wsgi_app
from django_idempotency.observers.prometheus import metrics_view

_lock = threading.Lock()
_entered = 0
_runs = itertools.count(1)
_events: list[tuple[str, str]] = []


@headers_scope
def api_key_scope(headers: Mapping[str, str]) -> str:
    """``key:<digest of X-Api-Key>``, or ``anonymous`` without one."""
    key = headers.get("X-Api-Key")
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32] if key else "anonymous"


class CountingMiddleware:
    """Counts every request that reaches Django's middleware (but the stats' own).

    Sync and async, so under ASGI no request queues for the thread sync code runs in.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        global _entered
        if not request.path.startswith(("/edge/stats/", "/metrics/")):
            with _lock:
                _entered += 1
        return self.get_response(request)


def _record(sender: Any, outcome: str, door: str, **kwargs: Any) -> None:
    with _lock:
        _events.append((outcome, door))


for _signal in (
    signals.executed,
    signals.replayed,
    signals.mismatch,
    signals.integrity_failed,
    signals.refused,
):
    _signal.connect(_record, weak=False)


def _charge(request: HttpRequest) -> HttpResponse:
    """A view with a body, a status and headers of its own, different on every run."""
    run = next(_runs)
    response = JsonResponse(
        {"run": run, "body": hashlib.sha256(request.body).hexdigest()}, status=201
    )
    response["Location"] = f"/charges/{run}"
    response["X-Charge-Run"] = str(run)
    response.set_cookie("per-client", "never-replayed")
    return response


charge = csrf_exempt(_charge)


@csrf_exempt
async def gated(request: HttpRequest) -> HttpResponse:
    """Tells the test it runs (``edge:entered``), then runs until the test opens ``edge:gate``.

    A coroutine, so waiting holds no thread the server needs for the other requests.
    """
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    try:
        await client.rpush("edge:entered", request.headers["Idempotency-Key"])
        await client.blpop(["edge:gate"], timeout=60)
    finally:
        await client.aclose()
    return _charge(request)


async def stats(request: HttpRequest) -> JsonResponse:
    """What the server saw so far."""
    with _lock:
        return JsonResponse({"entered": _entered, "events": list(_events)})


urlpatterns = [
    path("edge/charge/", charge),
    path("edge/gated/", gated),
    path("edge/stats/", stats),
    path("metrics/", metrics_view),
]


def __getattr__(name: str) -> Any:
    """The applications, built when a server asks for them (Django is set up by then)."""
    if name in ("edge_wsgi", "plain_wsgi"):
        from django.core.wsgi import get_wsgi_application

        application = get_wsgi_application()
        return wsgi_app(application) if name == "edge_wsgi" else application
    if name in ("edge_asgi", "plain_asgi"):
        from django.core.asgi import get_asgi_application

        asgi = get_asgi_application()
        return asgi_app(asgi) if name == "edge_asgi" else asgi
    raise AttributeError(name)
