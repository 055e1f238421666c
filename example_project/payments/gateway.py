"""A fake payment gateway: slow like a real one, and it writes down every call.

If the same idempotency key ever shows up twice in :class:`~payments.models.GatewayCall`,
a customer was charged twice.
"""

from __future__ import annotations

import secrets
import time

from .models import GatewayCall

#: Seconds a charge takes: long enough for concurrent duplicates to overlap it.
LATENCY = 0.5


def charge(*, amount: int, currency: str, idempotency_key: str) -> str:
    """Charge the card; return the gateway's reference for the payment."""
    time.sleep(LATENCY)
    reference = "ch_" + secrets.token_hex(8)
    GatewayCall.objects.create(
        idempotency_key=idempotency_key, amount=amount, currency=currency, reference=reference
    )
    return reference
