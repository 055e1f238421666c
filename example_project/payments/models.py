"""A charge, and the fake gateway's log of the calls it received."""

from django.conf import settings
from django.db import models


class Charge(models.Model):
    """A payment we took: through the API (a customer) or the donation form (anonymous)."""

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT
    )
    amount = models.PositiveIntegerField(help_text="In the currency's smallest unit (cents).")
    currency = models.CharField(max_length=3, default="eur")
    description = models.CharField(max_length=200, blank=True)
    gateway_reference = models.CharField(max_length=40)
    status = models.CharField(max_length=20, default="pending")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} ({self.gateway_reference})"


class GatewayCall(models.Model):
    """One call the fake gateway received: the ledger the demo checks at the end.

    It lives in the database, not in a worker's memory, so that the calls made by
    every gunicorn worker are counted together.
    """

    idempotency_key = models.CharField(max_length=255, db_index=True)
    amount = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    reference = models.CharField(max_length=40)
    created = models.DateTimeField(auto_now_add=True)
