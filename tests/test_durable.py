"""Durable mode: the stored response commits with the view's work, in the database."""

from __future__ import annotations

import json
import uuid

import pytest

from django_idempotency.models import StoredResponse
from django_idempotency.stores import database

from .support.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def _post(client, key: str, query: str = ""):
    return client.post(
        "/durable/" + query,
        data="{}",
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )


def test_redis_flushed_after_a_durable_request_replays_from_the_database(client, redis_client):
    key = str(uuid.uuid4())
    first = _post(client, key)
    assert first.status_code == 201
    assert StoredResponse.objects.filter(key=key).count() == 1
    redis_client.flushall()  # Redis forgets, as after a restart without persistence
    second = _post(client, key)
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert Execution.objects.count() == 1
    # Written back to Redis: the next retry replays without the database row.
    StoredResponse.objects.all().delete()
    third = _post(client, key)
    assert third["Idempotent-Replayed"] == "true"
    assert json.loads(third.content) == json.loads(first.content)
    assert Execution.objects.count() == 1


def test_a_failed_durable_view_leaves_no_row_and_the_retry_runs(client, redis_client):
    key = str(uuid.uuid4())
    with pytest.raises(RuntimeError):
        _post(client, key, "?fail=1")
    assert Execution.objects.count() == 0  # the door's transaction rolled back
    assert StoredResponse.objects.count() == 0
    second = _post(client, key)
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert Execution.objects.count() == 1


def test_a_different_request_under_a_durable_key_gets_422_after_redis_forgot(client, redis_client):
    key = str(uuid.uuid4())
    _post(client, key)
    redis_client.flushall()
    other = client.post(
        "/durable/",
        data='{"other": 1}',
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )
    assert other.status_code == 422
    assert Execution.objects.count() == 1


def test_purge_deletes_only_expired_rows(client, redis_client):
    _post(client, str(uuid.uuid4()))
    old = str(uuid.uuid4())
    _post(client, old)
    from django.utils import timezone

    StoredResponse.objects.filter(key=old).update(expires=timezone.now())
    assert database.purge(dry_run=True) == 1
    assert database.purge() == 1
    assert list(StoredResponse.objects.values_list("key", flat=True)) != [old]
    assert StoredResponse.objects.count() == 1


def test_inspect_purge_expired_rows_deletes_expired_durable_rows(client, redis_client):
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    _post(client, str(uuid.uuid4()))
    StoredResponse.objects.update(expires=timezone.now())
    out = StringIO()
    call_command("idempotency_inspect", "purge", "--expired-rows", stdout=out)
    assert "Deleted 1 expired durable row(s)." in out.getvalue()
    assert StoredResponse.objects.count() == 0
