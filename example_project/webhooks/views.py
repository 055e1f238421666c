"""A webhook receiver: the payment provider redelivers events until it sees a 2xx.

The provider sends its event id as the ``Idempotency-Key``, so a redelivery is
answered from the stored response and the handler runs once per event.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from django_idempotency import idempotent_view, request_key

from .models import WebhookEvent
from .tasks import settle_event

SIGNATURE_HEADER = "X-Signature"


def sign(body: bytes) -> str:
    """The provider's signature of a request body (HMAC-SHA256 with the shared secret)."""
    return hmac.new(settings.WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()


def signed(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Refuse requests that the provider did not sign.

    This goes *outside* ``@idempotent_view``: a forged request must never claim an
    event's key, or the real delivery would get the forgery's stored answer.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(given, sign(request.body)):
            return JsonResponse({"error": "bad signature"}, status=401)
        return view(request, *args, **kwargs)

    return wrapper


@csrf_exempt
@require_POST
@signed
@idempotent_view(required=True)
def payment_events(request: HttpRequest) -> HttpResponse:
    """Record one event from the payment provider and hand its work to a Celery task.

    A redelivery is replayed, not rerun. The job's id comes from the event's key
    (``request_key``): were this view run again after a crash, it would enqueue the
    same job, and the job runs once.
    """
    event = json.loads(request.body)
    WebhookEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)
    job = None
    if event["type"] == "charge.settled":
        job = request_key("settle")
        settle_event.apply_async((event["id"], event["data"]["reference"]), task_id=job)
    return JsonResponse({"event": event["id"], "job": job}, status=202 if job else 200)
