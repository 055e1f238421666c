"""Views the client's tests (tests/test_client.py) call through gunicorn.

Each records its executions in Redis, where the test (another process) counts them, and
can be held on a gate the test opens, so the test orders the view against the client's
attempts without sleeping. ``?tag=T`` names the call's Redis keys (:data:`RUNS`,
:data:`GATE`); ``?gate=1`` holds the view until the gate opens. Query strings are part of
the request's fingerprint, so every attempt of a call is the same request.
"""

from __future__ import annotations

import json
import os
import time

import redis
from django.http import HttpRequest, JsonResponse

from django_idempotency import idempotent_view

#: A list with one JSON entry per execution: ``{"key": <Idempotency-Key header>, "pid"}``.
RUNS = "client:runs:{tag}"
#: The view waits until an item is pushed here (and leaves it, so the gate stays open).
GATE = "client:gate:{tag}"
#: The pids of the workers a warm-up reached.
WARM = "client:warm:{tag}"
#: The longest the view waits for its gate.
GATE_TIMEOUT = 60


def wait_for_item(client: redis.Redis, key: str, timeout: float) -> None:
    """Block until the list ``key`` has an item (left there), for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    # BLMOVE onto itself waits for an item and leaves it, in one command; a second at a
    # time, within the clients' socket timeout.
    while client.blmove(key, key, 1) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing came to {key} within {timeout} s")


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def counted(request: HttpRequest) -> JsonResponse:
    """POST: record the execution, wait for the gate if asked, answer 201 with a token
    drawn per execution (two executions never answer the same body).

    GET ``?tag=T&workers=N`` warms the server up: each such request holds its worker until
    N of them arrived, so N sent at once reach N distinct workers, each of which has then
    loaded the URLconf and these views (a cold worker's first request can take longer than
    a test's read timeout). It answers the worker's pid.
    """
    tag = request.GET["tag"]
    client = _redis()
    if request.method == "GET":
        try:
            if client.rpush(WARM.format(tag=tag), os.getpid()) >= int(request.GET["workers"]):
                client.rpush(GATE.format(tag=tag), "open")
            wait_for_item(client, GATE.format(tag=tag), GATE_TIMEOUT)
        finally:
            client.close()
        return JsonResponse({"pid": os.getpid()})
    try:
        entry = {"key": request.headers.get("Idempotency-Key"), "pid": os.getpid()}
        run = client.rpush(RUNS.format(tag=tag), json.dumps(entry))
        if request.GET.get("gate"):
            wait_for_item(client, GATE.format(tag=tag), GATE_TIMEOUT)
    finally:
        client.close()
    return JsonResponse(
        {"run": run, "token": os.urandom(8).hex(), "body": request.body.decode()}, status=201
    )


#: :func:`counted` behind the decorator with ``conflict="reject"``: a duplicate sent
#: while the first runs gets 409 with Retry-After at once.
counted_reject = idempotent_view(conflict="reject")(counted)
