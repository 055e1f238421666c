"""Durable mode: the result commits with the work, in the database, and is replayed from
there when Redis forgot it; in-process, on SQLite, through every durable door."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.db.transaction import TransactionManagementError
from django.test import Client

from django_idempotency import RecordTampered, arun, idempotent_view, run
from django_idempotency.models import DurableRecord
from django_idempotency.options import InvalidOption
from django_idempotency.records import Kind, record_id
from django_idempotency.stores.database import DatabaseRows

from .support.models import Execution

pytestmark = [pytest.mark.matrix, pytest.mark.django_db(transaction=True)]

VIEWS = ["/durable/", "/durable-drf/"]


def post(client: Client, path: str, key: str, body: str = "{}") -> Any:
    return client.post(
        path, data=body, content_type="application/json", headers={"Idempotency-Key": key}
    )


def rows() -> int:
    return int(DurableRecord.objects.count())


@pytest.mark.parametrize("path", VIEWS)
def test_redis_flushed_after_a_durable_request_replays_from_the_database(path, redis_client):
    client, key = Client(), str(uuid.uuid4())
    first = post(client, path, key)
    assert first.status_code == 201
    assert rows() == 1
    redis_client.flushall()  # Redis forgets, as after a restart without persistence
    second = post(client, path, key)
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert Execution.objects.count() == 1
    # Written back to Redis: the next retry replays without the row.
    DurableRecord.objects.all().delete()
    third = post(client, path, key)
    assert third["Idempotent-Replayed"] == "true"
    assert third.content == first.content
    assert Execution.objects.count() == 1


@pytest.mark.parametrize("path", VIEWS)
def test_a_failed_durable_view_leaves_no_row_and_the_retry_runs(path, redis_client):
    client, key = Client(raise_request_exception=True), str(uuid.uuid4())
    with pytest.raises(RuntimeError):
        post(client, path + "?fail=1", key)
    assert Execution.objects.count() == 0  # the door's transaction rolled back
    assert rows() == 0
    second = post(client, path, key)
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert Execution.objects.count() == 1


def test_a_different_request_under_a_durable_key_gets_422_after_redis_forgot(redis_client):
    client, key = Client(), str(uuid.uuid4())
    post(client, "/durable/", key)
    redis_client.flushall()
    other = post(client, "/durable/", key, '{"other": 1}')
    assert other.status_code == 422
    assert Execution.objects.count() == 1
    # The refused claim was released: the original request still replays.
    assert post(client, "/durable/", key)["Idempotent-Replayed"] == "true"


def test_a_tampered_row_is_refused_and_the_view_does_not_run(redis_client):
    client, key = Client(), str(uuid.uuid4())
    post(client, "/durable/", key)
    redis_client.flushall()
    row = DurableRecord.objects.get()
    flipped = bytearray(row.record)
    flipped[-20] ^= 1
    DurableRecord.objects.filter(pk=row.pk).update(record=bytes(flipped))
    refused = post(client, "/durable/", key)
    assert refused.status_code == RecordTampered.status
    assert refused["Content-Type"] == "application/problem+json"
    assert Execution.objects.count() == 1


def test_the_row_holds_the_sealed_record_not_the_client_key(redis_client):
    key = str(uuid.uuid4())
    post(Client(), "/durable/", key)
    row = DurableRecord.objects.get()
    assert row.rid == record_id(Kind.HTTP, "anonymous", key).hex()
    assert key.encode() not in bytes(row.record)  # UUID keys are packed, others sealed
    assert row.expires_ms > time.time() * 1000


def test_a_second_commit_of_the_same_work_is_refused_by_the_table():
    # What stops a second run when a lease was lost while the first still ran: the
    # row's primary key is the record id, so the second insert fails and rolls back.
    table, rid = DatabaseRows(), uuid.uuid4().bytes[:12]
    with transaction.atomic():
        table.write(rid, b"first", 60_000, "default")
    with pytest.raises(IntegrityError), transaction.atomic():
        table.write(rid, b"second", 60_000, "default")
    assert table.read(rid) == b"first"
    # An expired row no longer counts: the key may be used again, as in Redis.
    DurableRecord.objects.update(expires_ms=int(time.time() * 1000))
    assert table.read(rid) is None
    with transaction.atomic():
        table.write(rid, b"again", 60_000, "default")
    assert table.read(rid) == b"again"


def test_non_durable_views_write_no_rows(redis_client):
    post(Client(), "/decorator/", str(uuid.uuid4()))
    post(Client(), "/middleware/", str(uuid.uuid4()))
    assert rows() == 0


def test_the_durable_setting_covers_the_decorator_but_not_the_middleware(settings, redis_client):
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "DURABLE": True}
    assert post(Client(), "/decorator/", str(uuid.uuid4())).status_code == 201
    assert rows() == 1
    # The middleware is called before and after the view, not around its transaction.
    assert post(Client(), "/db/", str(uuid.uuid4())).status_code == 201
    assert rows() == 1


# -- run() -----------------------------------------------------------------------------


def test_durable_run_commits_its_work_and_result_together(redis_client):
    key = uuid.uuid4().hex

    def charge() -> dict[str, int]:
        assert transaction.get_connection().in_atomic_block  # run() opened it
        return {"execution": Execution.objects.create(key=key).pk}

    first = run(key, charge, durable=True)
    assert rows() == 1
    redis_client.flushall()
    assert run(key, charge, durable=True) == first
    assert Execution.objects.count() == 1


def test_durable_run_that_raises_rolls_back_and_writes_no_row(redis_client):
    key = uuid.uuid4().hex

    def broken() -> None:
        Execution.objects.create(key=key)
        raise ValueError("declined")

    with pytest.raises(ValueError):
        run(key, broken, durable=True)
    assert Execution.objects.count() == 0
    assert rows() == 0
    # The error is still the stored outcome (in Redis), as without durable mode.
    with pytest.raises(ValueError, match="declined"):
        run(key, broken, durable=True)
    assert Execution.objects.count() == 0


def test_durable_run_refuses_to_run_inside_a_transaction(redis_client):
    ran = []
    with pytest.raises(TransactionManagementError), transaction.atomic():
        run(uuid.uuid4().hex, lambda: ran.append(1), durable=True)
    assert ran == []


def test_a_tampered_row_is_refused_by_run(redis_client):
    key = uuid.uuid4().hex
    run(key, lambda: 1, durable=True)
    redis_client.flushall()
    DurableRecord.objects.update(record=b"planted")
    ran = []
    with pytest.raises(RecordTampered):
        run(key, lambda: ran.append(1), durable=True)
    assert ran == []


def test_durable_is_refused_for_coroutines_before_anything_runs():
    async def action() -> int:
        return 1

    with pytest.raises(InvalidOption, match="arun"):
        asyncio.run(arun(uuid.uuid4().hex, action, durable=True))

    async def view(request: Any) -> Any:
        raise AssertionError("never called")

    with pytest.raises(InvalidOption, match="durable"):
        idempotent_view(durable=True)(view)
    with pytest.raises(InvalidOption, match="durable"):
        run(uuid.uuid4().hex, lambda: 1, durable="yes")  # type: ignore[arg-type]


# -- operating ---------------------------------------------------------------------------


def test_purge_and_stats_cover_durable_rows(redis_client):
    for _ in range(3):
        post(Client(), "/durable/", str(uuid.uuid4()))
    DurableRecord.objects.filter(
        pk__in=list(DurableRecord.objects.values_list("pk", flat=True)[:2])
    ).update(expires_ms=int(time.time() * 1000))

    out = StringIO()
    call_command("idempotency_inspect", "stats", "--json", "--rows", stdout=out)
    assert json.loads(out.getvalue())["durable_rows"] == {"total": 3, "expired": 2}
    out = StringIO()
    call_command("idempotency_inspect", "stats", "--rows", stdout=out)
    assert "durable rows (database): 3, 2 expired" in out.getvalue()

    out = StringIO()
    call_command("idempotency_inspect", "purge", "--expired-rows", "--dry-run", stdout=out)
    assert "Would delete 2 expired durable row(s)." in out.getvalue()
    assert rows() == 3
    call_command("idempotency_inspect", "purge", "--expired-rows", stdout=StringIO())
    assert rows() == 1


def test_the_admin_lists_durable_rows_decoded_and_read_only(admin_client, redis_client):
    key = str(uuid.uuid4())
    post(Client(), "/durable/", key)
    row = DurableRecord.objects.get()
    listing = admin_client.get("/admin/django_idempotency/durablerecord/")
    assert listing.status_code == 200
    assert key in listing.content.decode()  # decoded from the sealed record
    detail = admin_client.get(f"/admin/django_idempotency/durablerecord/{row.pk}/change/")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "anonymous" in page and '"execution"' in page.replace("&quot;", '"')
    assert admin_client.get("/admin/django_idempotency/durablerecord/add/").status_code == 403
    # A row that does not verify is shown as such, never decoded.
    DurableRecord.objects.update(record=b"planted")
    assert (
        "does not verify"
        in admin_client.get("/admin/django_idempotency/durablerecord/").content.decode()
    )
