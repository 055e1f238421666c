"""The front page, and the ledger the demo reads at the end."""

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from payments.models import GatewayCall
from webhooks.models import JobDelivery, JobRun, WebhookEvent

INDEX = """django-idempotency example project

POST /api/charges/        DRF viewset + IdempotentMixin (token auth; key required)
GET  /api/schema/         its OpenAPI schema (drf-spectacular), with the Idempotency-Key contract
GET  /donate/             a plain Django form; its POST is covered by IdempotencyMiddleware
POST /webhooks/payments/  @idempotent_view(required=True), signed by the provider
GET  /metrics             Prometheus metrics of django-idempotency (every worker summed)
GET  /ledger/             the gateway's calls, the webhook's runs and its jobs' runs, per key
"""


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(INDEX, content_type="text/plain; charset=utf-8")


@require_GET
def ledger(request: HttpRequest) -> JsonResponse:
    """How often the gateway was called per key, the webhook ran per event, and its job
    ran (and was delivered by the broker) per event and per task id.

    A demo-only window (no authentication): every number should be 1.
    """
    calls = GatewayCall.objects.values_list("idempotency_key").annotate(n=Count("id"))
    runs = WebhookEvent.objects.values_list("event_id").annotate(n=Count("id"))
    job_runs = JobRun.objects.values_list("event_id").annotate(n=Count("id"))
    deliveries = JobDelivery.objects.values_list("task_id").annotate(n=Count("id"))
    return JsonResponse(
        {
            "gateway_calls": dict(calls.order_by("idempotency_key")),
            "webhook_runs": dict(runs.order_by("event_id")),
            "job_runs": dict(job_runs.order_by("event_id")),
            "job_deliveries": dict(deliveries.order_by("task_id")),
        }
    )
