# mypy: disallow-subclassing-any=False
# (DRF ships no type hints; its classes are Any to mypy.)
"""Payments: a DRF viewset behind the mixin, and a plain Django form behind the middleware."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from rest_framework import mixins, viewsets

from django_idempotency.drf import IdempotentMixin

from . import gateway
from .forms import DonationForm
from .models import Charge
from .serializers import ChargeSerializer


def client_key(request: Any) -> str:
    """The key as sent, for the gateway's ledger: the Idempotency-Key header (sf-string
    quotes removed), else the form's ``idempotency_key`` field.

    Real code would pass its own key to the gateway (gateways are idempotent too);
    the example does it so that the demo can count the gateway's calls per key.
    """
    header = str(request.headers.get("Idempotency-Key", "")).strip().strip('"')
    return header or str(request.POST.get("idempotency_key", ""))


class ChargeViewSet(
    IdempotentMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """``POST /api/charges/`` charges the customer's card, once per Idempotency-Key.

    Keys are scoped to the authenticated customer (the default scope): the mixin
    claims the key after DRF has authenticated the request.
    """

    serializer_class = ChargeSerializer
    idempotency_actions = {"create"}  # list and retrieve are reads: not covered
    idempotency_required = True  # a POST without a key gets 400, not a risk of double charge

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            # drf-spectacular inspecting the view for /api/schema/: no customer to filter by.
            return Charge.objects.none()
        return Charge.objects.filter(customer=self.request.user).order_by("-id")

    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        reference = gateway.charge(
            amount=data["amount"],
            currency=data["currency"],
            idempotency_key=client_key(self.request),
        )
        serializer.save(customer=self.request.user, gateway_reference=reference, status="paid")


def donate(request: HttpRequest) -> HttpResponse:
    """A plain Django form (POST, then redirect), covered by ``IdempotencyMiddleware``.

    The template renders ``{% idempotency_key_field %}``: a hidden field with a fresh
    key each time the form is rendered, which the middleware reads when there is no
    ``Idempotency-Key`` header. A double-click then charges once, and both clicks land
    on the same thank-you page (the second gets the first's redirect, replayed).
    """
    if request.method == "POST":
        form = DonationForm(request.POST)
        if form.is_valid():
            amount = form.cleaned_data["amount"]
            reference = gateway.charge(
                amount=amount, currency="eur", idempotency_key=client_key(request)
            )
            charge = Charge.objects.create(
                amount=amount,
                currency="eur",
                description=f"Donation from {form.cleaned_data['name']}",
                gateway_reference=reference,
                status="paid",
            )
            return redirect("donation-thanks", pk=charge.pk)
    else:
        form = DonationForm()
    return render(request, "payments/donate.html", {"form": form})


def donation_thanks(request: HttpRequest, pk: int) -> HttpResponse:
    charge = get_object_or_404(Charge, pk=pk, customer=None)
    return render(request, "payments/thanks.html", {"charge": charge})
