"""The floor: only the Redis work any idempotency layer must do, in raw redis-py.

First time: ``SET NX PX`` claims the key, the view runs, ``SET EX`` stores the body
(two round trips). Replay: ``SET NX`` fails, ``GET`` fetches the body (two round
trips). No scope, fingerprint, headers, lease renewal, waiting or error handling:
this is the yardstick, not a usable implementation.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio
from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django_redis import get_redis_connection


class FloorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.redis = get_redis_connection("default")

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        key = request.headers.get("Idempotency-Key")
        if key is None or request.method != "POST":
            return self.get_response(request)
        if not self.redis.set("floor:" + key, b"", nx=True, px=30_000):
            body = self.redis.get("floor:" + key)
            status = 200 if body else 409  # an empty value: the first request still runs
            replay = HttpResponse(body, content_type="application/json", status=status)
            replay["Idempotent-Replayed"] = "true"
            return replay
        response = self.get_response(request)
        self.redis.set("floor:" + key, response.content, ex=86_400)  # type: ignore[attr-defined]
        return response


class AsyncFloorMiddleware:
    """:class:`FloorMiddleware` for the asyncio stack: the same two commands on redis.asyncio."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)
        # One client per event loop (uvicorn runs one), made on first use in it.
        self.redis: Any = None

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        key = request.headers.get("Idempotency-Key")
        if key is None or request.method != "POST":
            return await self.get_response(request)
        if self.redis is None:
            self.redis = redis.asyncio.Redis.from_url(str(settings.CACHES["default"]["LOCATION"]))
        if not await self.redis.set("floor:" + key, b"", nx=True, px=30_000):
            body = await self.redis.get("floor:" + key)
            replay = HttpResponse(
                body, content_type="application/json", status=200 if body else 409
            )
            replay["Idempotent-Replayed"] = "true"
            return replay
        response = await self.get_response(request)
        await self.redis.set("floor:" + key, response.content, ex=86_400)  # type: ignore[attr-defined]
        return response


def floor_run(redis: Any, key: str, action: Callable[[], Any]) -> Any:
    """``run()`` reduced to its Redis floor: claim, act, store; or claim-fails, get."""
    if not redis.set("floor-run:" + key, b"", nx=True, px=30_000):
        return json.loads(redis.get("floor-run:" + key))
    value = action()
    redis.set("floor-run:" + key, json.dumps(value), ex=86_400)
    return value
