"""A stored response must never describe work that was rolled back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection

from .support import views
from .support.models import Execution


@pytest.fixture
def atomic_requests(transactional_db: None) -> Iterator[None]:
    connection.settings_dict["ATOMIC_REQUESTS"] = True
    yield
    connection.settings_dict["ATOMIC_REQUESTS"] = False


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    views.calls.clear()


@pytest.mark.parametrize("url", ["/decorator/", "/drf/"])
def test_rollback_after_the_view_returned_stores_nothing_and_retry_runs(
    client, atomic_requests, redis_client, url
):
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}
    first = client.post(
        url + "?db=1&rollback=1", data="{}", content_type="application/json", headers=headers
    )
    assert first.status_code == 201
    assert Execution.objects.count() == 0  # the view's write was rolled back
    assert redis_client.dbsize() == 0 or not list(redis_client.scan_iter("idem:{*}"))
    second = client.post(url + "?db=1", data="{}", content_type="application/json", headers=headers)
    assert "Idempotent-Replayed" not in second
    assert Execution.objects.count() == 1


@pytest.mark.parametrize("url", ["/decorator/", "/drf/"])
def test_commit_stores_the_response_under_atomic_requests(client, atomic_requests, url):
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}
    first = client.post(url + "?db=1", data="{}", content_type="application/json", headers=headers)
    second = client.post(url + "?db=1", data="{}", content_type="application/json", headers=headers)
    assert second["Idempotent-Replayed"] == "true"
    assert json.loads(second.content) == json.loads(first.content)
    assert Execution.objects.count() == 1
