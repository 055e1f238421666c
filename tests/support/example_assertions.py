"""``assert_idempotent`` on the example project's endpoints, as a user's test would call it.

Run with the example's settings (``DJANGO_SETTINGS_MODULE=exampleproject.settings``,
``example_project`` on ``PYTHONPATH``, ``REDIS_URL`` and ``EXAMPLE_DB_PATH`` set) by
tests/test_assert_idempotent.py. It migrates a fresh database, then checks the payments
API (DRF mixin, token authentication), the signed webhook (``@idempotent_view``) and the
donation form (the middleware). Prints one JSON line: the rows per endpoint; exits 1
if a promise is broken.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid

import django


def main() -> int:
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from django_idempotency.testing import PromiseBroken, assert_idempotent

    setup_test_environment()  # the test client's host, "testserver", is allowed
    call_command("migrate", verbosity=0)
    user = User.objects.create_user("alice")
    charges = APIClient()
    charges.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    # The example's apps are not importable by name for the type checker of this suite.
    charge_model = importlib.import_module("payments.models").Charge
    events = importlib.import_module("webhooks.models").WebhookEvent
    webhooks = importlib.import_module("webhooks.views")

    def signed(body: bytes) -> dict[str, str]:
        return {webhooks.SIGNATURE_HEADER: webhooks.sign(body)}

    checks = {
        "charges": lambda: assert_idempotent(
            charges,
            "POST",
            "/api/charges/",
            {"amount": 1999, "currency": "eur"},
            executed=charge_model.objects.count,
        ),
        "webhook": lambda: assert_idempotent(
            Client(),
            "POST",
            "/webhooks/payments/",
            {"id": f"evt_{uuid.uuid4().hex}", "type": "charge.created", "data": {}},
            headers=signed,
            executed=events.objects.count,
        ),
        "donation": lambda: assert_idempotent(
            Client(),
            "POST",
            "/donate/",
            {"name": "Ada", "amount": "500"},
            content_type="application/x-www-form-urlencoded",
            executed=charge_model.objects.count,
        ),
    }
    report, status = {}, 0
    for name, check in checks.items():
        try:
            results = check()
        except PromiseBroken as exc:
            print(exc, file=sys.stderr)
            results, status = exc.results, 1
        report[name] = [r.as_dict() for r in results]
    print(json.dumps(report))
    return status


if __name__ == "__main__":
    sys.exit(main())
