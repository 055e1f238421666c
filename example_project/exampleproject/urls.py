"""URLs: the payments API, the donation form, the webhook receiver and /metrics."""

from django.urls import include, path

from django_idempotency.observers.prometheus import metrics_view

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("ledger/", views.ledger, name="ledger"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("payments.urls")),
    path("webhooks/", include("webhooks.urls")),
]
