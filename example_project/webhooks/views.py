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
from payments.models import Charge

from django_idempotency import idempotent_view

from .models import WebhookEvent

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
    """Handle one event from the payment provider; a redelivery is replayed, not rerun."""
    event = json.loads(request.body)
    WebhookEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)
    settled = 0
    if event["type"] == "charge.settled":
        settled = Charge.objects.filter(gateway_reference=event["data"]["reference"]).update(
            status="settled"
        )
    return JsonResponse({"event": event["id"], "charges_settled": settled})
