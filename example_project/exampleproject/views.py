"""The front page, and the ledger the demo reads at the end."""

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from payments.models import GatewayCall
from webhooks.models import WebhookEvent

INDEX = """django-idempotency example project

POST /api/charges/        DRF viewset + IdempotentMixin (token auth; key required)
GET  /donate/             a plain Django form; its POST is covered by IdempotencyMiddleware
POST /webhooks/payments/  @idempotent_view(required=True), signed by the provider
GET  /ledger/             the fake gateway's calls and the webhook handler's runs, per key
"""


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(INDEX, content_type="text/plain; charset=utf-8")


@require_GET
def ledger(request: HttpRequest) -> JsonResponse:
    """How often the gateway was called per idempotency key, and the webhook run per event.

    A demo-only window (no authentication): every number should be 1.
    """
    calls = GatewayCall.objects.values_list("idempotency_key").annotate(n=Count("id"))
    runs = WebhookEvent.objects.values_list("event_id").annotate(n=Count("id"))
    return JsonResponse(
        {
            "gateway_calls": dict(calls.order_by("idempotency_key")),
            "webhook_runs": dict(runs.order_by("event_id")),
        }
    )
