"""Owners the outcome-unknown tests kill (importable by ``spawn``)."""

from __future__ import annotations

import os
import time
from typing import Literal


def run_until_killed(
    redis_url: str, key: str, started: str, lock_ttl: float, policy: Literal["rerun", "refuse"]
) -> None:
    """Claim ``key`` with run() under ``policy`` and hang in the action (SIGKILLed there)."""
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.IDEMPOTENCY = {"REDIS": redis_url, "LOCK_TTL": lock_ttl}
    import redis

    from django_idempotency import run

    client = redis.Redis.from_url(redis_url)

    def action() -> None:
        client.rpush(started, os.getpid())
        time.sleep(3600)

    run(key, action, outcome_unknown=policy)
