"""isolated_store(): inside it, records of its own on the same Redis; after it, none left.

The block is what the pytest plugin wraps each test in and what the test runner opens
for each test (tests/test_user_isolation.py proves both in a user's project). Here, on
the suite's Redis: a record made outside the block (a dev server's, say) is neither
replayed inside it nor touched; the sync and the asyncio doors both write inside it under
the block's own prefix; a settings change inside the block keeps it isolated; and
whatever the block claimed is gone when it ends.
"""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client, override_settings

from django_idempotency.conf import get_settings
from django_idempotency.testing.isolation import isolated_store

REPLAYED = "Idempotent-Replayed"


def post(client: Client, path: str, key: str) -> tuple[int, bytes, str | None]:
    response = client.post(
        path, b"{}", content_type="application/json", headers={"Idempotency-Key": key}
    )
    return response.status_code, response.content, response.get(REPLAYED)


def apost(path: str, key: str) -> tuple[int, bytes, str | None]:
    async def send() -> tuple[int, bytes, str | None]:
        response = await AsyncClient().post(
            path, b"{}", content_type="application/json", headers={"Idempotency-Key": key}
        )
        return response.status_code, response.content, response.get(REPLAYED)

    return async_to_sync(send)()


def names(redis_client, pattern: str) -> set[bytes]:
    return set(redis_client.scan_iter(match=pattern, count=1000))


@pytest.mark.django_db(transaction=True)
def test_a_block_has_records_of_its_own_and_leaves_none(redis_client):
    prefix = get_settings().KEY_PREFIX
    client = Client()
    key, async_key = str(uuid.uuid4()), str(uuid.uuid4())
    outside = post(client, "/decorator/", key)
    shared = names(redis_client, f"{prefix}:{{*}}")
    assert outside[0] == 201 and outside[2] is None and shared

    with isolated_store():
        first = post(client, "/decorator/", key)
        retry = post(client, "/decorator/", key)
        async_first = apost("/async-decorated/", async_key)
        async_retry = apost("/async-decorated/", async_key)
        inside = names(redis_client, f"{prefix}:test-*")

    assert first[0] == 201 and first[2] is None, "the record made outside was replayed"
    assert first[1] != outside[1]
    assert retry == (201, first[1], "true")
    assert async_first[0] == 201 and async_first[2] is None
    assert async_retry == (201, async_first[1], "true")
    assert len(inside) == 2, inside  # the sync and the async door's
    assert names(redis_client, f"{prefix}:test-*") == set()
    assert names(redis_client, f"{prefix}:{{*}}") == shared
    assert post(client, "/decorator/", key) == (201, outside[1], "true")


def test_a_settings_change_inside_the_block_stays_isolated(redis_client, settings):
    prefix = get_settings().KEY_PREFIX
    client = Client()
    key = str(uuid.uuid4())
    outside = post(client, "/decorator/", key)

    with isolated_store():
        with override_settings(IDEMPOTENCY={**settings.IDEMPOTENCY, "TTL": 60}):
            first = post(client, "/decorator/", key)
            inside = names(redis_client, f"{prefix}:test-*")
        after_restore = post(client, "/decorator/", key)

    assert first[0] == 201 and first[2] is None
    assert first[1] != outside[1]
    assert inside
    # The restored settings build another engine: the block's too, with its records.
    assert after_restore == (201, first[1], "true")
    assert names(redis_client, f"{prefix}:test-*") == set()


@pytest.mark.no_redis
def test_each_block_gets_an_empty_in_memory_store(settings):
    settings.IDEMPOTENCY = {"STORE": "django_idempotency.stores.memory.open_store"}
    client = Client()
    key = str(uuid.uuid4())
    runs = []
    for _ in range(2):
        with isolated_store():
            runs.append((post(client, "/decorator/", key), post(client, "/decorator/", key)))
    for first, retry in runs:
        assert first[0] == 201 and first[2] is None
        assert retry == (201, first[1], "true")
    assert runs[0][0][1] != runs[1][0][1]
