"""URLs: the payments API and its OpenAPI schema, the donation form, the webhook receiver and
/metrics."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from django_idempotency.observers.prometheus import metrics_view

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("ledger/", views.ledger, name="ledger"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("", include("payments.urls")),
    path("webhooks/", include("webhooks.urls")),
]
