"""Endpoints that break one idempotency promise each, for ``assert_idempotent`` and the
conformance tool to catch (tests/test_assert_idempotent.py, tests/test_conformance.py).

- ``unprotected``: a plain Django view, exempt from the middleware: every request runs.
- ``rerendering``: a home-made idempotency layer that stores a new body on each request
  and answers a retry with it, marked as a replay: replays are not byte-identical.
- ``rejecting``: this app with ``conflict="reject"``: concurrent duplicates get 409.
- ``body_ignoring``: this app with a fingerprint of the path alone: a changed body is
  replayed the first response instead of being refused with 422.

Each counts its executions per process in :data:`executions`; a GET of any of them
answers that count as JSON instead of running.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from django_idempotency import idempotency_exempt, idempotent_view, signals
from django_idempotency.testing.promises import new_key

executions: collections.Counter[str] = collections.Counter()
_lock = threading.Condition()
_ids = itertools.count(1)
#: ``rerendering``'s store: key -> the body it last made.
_stored: dict[str, bytes] = {}
#: 409s answered by ``rejecting``, per key (counted from the ``conflict`` signal).
_conflicts: collections.Counter[str] = collections.Counter()
#: The prefix of the keys the battery's concurrent check sends.
CONCURRENT_PREFIX = new_key("concurrent").rsplit("-", 1)[0] + "-"


def _run(name: str, request: HttpRequest) -> dict[str, Any]:
    with _lock:
        executions[name] += 1
        return {"view": name, "id": next(_ids), "body": request.body.decode("utf-8", "replace")}


def _count(name: str) -> JsonResponse:
    return JsonResponse({"executions": executions[name]})


@idempotency_exempt
def unprotected(request: HttpRequest) -> HttpResponse:
    """Runs every request: no idempotency at all."""
    if request.method == "GET":
        return _count("unprotected")
    return JsonResponse(_run("unprotected", request), status=201)


@idempotency_exempt
def rerendering(request: HttpRequest) -> HttpResponse:
    """Answers a known key with a replay mark, but with a body made (and stored) anew."""
    if request.method == "GET":
        return _count("rerendering")
    key = request.headers.get("Idempotency-Key", "")
    body = json.dumps(_run("rerendering", request)).encode()
    with _lock:
        seen = key in _stored
        _stored[key] = body
    response = HttpResponse(body, status=201, content_type="application/json")
    if seen:
        response["Idempotent-Replayed"] = "true"
    return response


def _count_conflict(sender: Any, key: str, **kwargs: Any) -> None:
    with _lock:
        _conflicts[key] += 1
        _lock.notify_all()


signals.conflict.connect(_count_conflict, dispatch_uid="tests.support.conformance_views")


@idempotent_view(conflict="reject")
def rejecting(request: HttpRequest) -> HttpResponse:
    """Refuses concurrent duplicates with 409 (this app's ``conflict="reject"``).

    So that the duplicates of the battery's concurrent check find it still running, the
    first request of that check holds until ``?hold=N`` duplicates have been refused
    (bounded: a broken battery must not hang the server).
    """
    if request.method == "GET":
        return _count("rejecting")
    key = request.headers.get("Idempotency-Key", "")
    hold = int(request.GET.get("hold", 0))
    if key.startswith(CONCURRENT_PREFIX):
        with _lock:
            _lock.wait_for(lambda: _conflicts[key] >= hold, timeout=60)
    return JsonResponse(_run("rejecting", request), status=201)


def path_only(request: HttpRequest) -> str:
    """A fingerprint that ignores method, query string and body."""
    return request.path


@idempotent_view(fingerprint=path_only)
def body_ignoring(request: HttpRequest) -> HttpResponse:
    """Replays the first response to any request with the same key, whatever its body."""
    if request.method == "GET":
        return _count("body_ignoring")
    return JsonResponse(_run("body_ignoring", request), status=201)
