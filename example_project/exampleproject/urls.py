"""URLs: the payments API, the donation form and the webhook receiver."""

from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("ledger/", views.ledger, name="ledger"),
    path("", include("payments.urls")),
    path("webhooks/", include("webhooks.urls")),
]
