"""The Redis side: key layout and the size of what a record costs."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User

from django_idempotency.records import Kind, record_id

from .support.records import opened


@pytest.mark.parametrize("size", [0, 100, 1000, 20000])
@pytest.mark.parametrize("url", ["/middleware/", "/drf/"])
def test_stored_record_costs_at_most_body_plus_300_bytes(client, redis_client, db, url, size):
    client.force_login(User.objects.create_user("someone-with-a-long-name"))
    key = str(uuid.uuid4())
    client.post(
        f"{url}?big={size}",
        data="{}",
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )
    (name,) = list(redis_client.scan_iter("idem:{*}"))
    record = opened(redis_client, name)
    assert record.state == "done" and record.key_text == key
    assert redis_client.memory_usage(name) <= size + 300


def test_record_ids_are_unambiguous_over_door_scope_and_key():
    ids = {
        record_id(Kind.HTTP, "ab", "c"),
        record_id(Kind.HTTP, "a", "bc"),
        record_id(Kind.CALL, "ab", "c"),
        record_id(Kind.HTTP, b"ab", b"c\x00"),
    }
    assert len(ids) == 4
    assert all(len(i) == 12 for i in ids)  # 96 bits: 16 base64url characters in a key name
