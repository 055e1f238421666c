"""Hostile clients: whatever they send, no 500, no half record, no reach into Redis names.

``test_properties`` covers key x method x body on three doors; this adds headers,
content types, query strings, 2-3 MiB bodies and every door, checks each stored
record whole, and shows that client input never becomes part of a Redis key name:
glob characters in keys or scopes cannot reach another scope or a purge. Last, a
flood of 10,000 distinct keys leaves Redis memory bounded by the TTL.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from django_idempotency.records import Kind, decode_http, record_id
from django_idempotency.stores.redis import key_name

from .support import views
from .support.records import DONE, HTTP, RUNNING, name_of, opened_if_present

#: Every Redis key the app may write: a prefix and a hash tag of 16 base64url characters.
KEY_NAME = re.compile(rb"idem:\{[A-Za-z0-9_-]{16}\}")

TWO_MIB = bytes(range(256)) * (2 * 4096)
THREE_MIB = b"\x00" * (3 * 1024 * 1024)  # beyond DATA_UPLOAD_MAX_MEMORY_SIZE: Django's 400

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=300,
)
headers = st.dictionaries(
    keys=st.one_of(
        st.sampled_from(
            [
                "Accept",
                "Accept-Encoding",
                "Authorization",
                "Cookie",
                "Content-Encoding",
                "Transfer-Encoding",
                "Expect",
                "Range",
                "If-None-Match",
                "Origin",
                "X-Forwarded-For",
                "X-Requested-With",
                "X-Tenant",
            ]
        ),
        st.from_regex(r"\AX-[A-Za-z0-9-]{1,16}\Z"),
    ),
    values=st.one_of(
        header_text,
        st.sampled_from(
            [
                "Basic Zm9vOmJhcg==",
                "Basic !!!",
                "Bearer x",
                "sessionid=nope; csrftoken=x",
                "chunked",
                "gzip",
                "100-continue",
                "bytes=0-10",
            ]
        ),
    ),
    max_size=6,
)
keys = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    st.text(alphabet="*?[]{}\\:-^!", min_size=1, max_size=12),
    st.builds(lambda s: f'"{s}"', st.text(max_size=40)),
)
bodies = st.one_of(
    st.binary(max_size=4096),
    st.text(max_size=512).map(str.encode),
    st.sampled_from([b"", TWO_MIB, THREE_MIB]),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/octet-stream",
            "text/plain; charset=utf-8",
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=BoUnDaRy",
            "",
        ]
    ),
    header_text,
)
methods = st.sampled_from(["POST", "PATCH", "PUT", "DELETE", "GET", "HEAD", "OPTIONS", "TRACE"])
paths = st.sampled_from(
    [
        "/middleware/",
        "/decorator/",
        "/decorator-strict/",
        "/async/",
        "/cbv/",
        "/drf/",
        "/api/charges/",
        "/api/charges/1/",
        "/exempt/",
    ]
)
#: The test views take switches from the query string (?status=500, ?sleep=...); keep clear.
SWITCHES = ("status", "raise", "sleep", "big", "stream", "rollback", "db")
queries = st.one_of(
    st.just(""),
    st.text(max_size=40)
    .filter(lambda q: not any(switch in q for switch in SWITCHES))
    .map(lambda q: "?" + q.replace("#", "")),
)


def assert_redis_holds_only_whole_records(redis_client: Any) -> None:
    """Every key is ours by name, has a TTL, and each record is whole and settled."""
    for name in redis_client.scan_iter("*"):
        assert KEY_NAME.fullmatch(name), name
        assert redis_client.pttl(name) != -1, name  # (-2: it expired since the SCAN)
        # One GET decides: a key that expires between the SCAN and the read is simply gone.
        record = opened_if_present(redis_client, name)
        if record is None:
            continue
        assert record.state != RUNNING
        if record.state == DONE and record.kind is HTTP:
            decode_http(record.payload)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    key=keys,
    extra=headers,
    body=bodies,
    content_type=content_types,
    method=methods,
    path=paths,
    query=queries,
)
def test_any_request_is_never_a_500_and_never_leaves_half_a_record(
    db, redis_client, key, extra, body, content_type, method, path, query
):
    # The test view behind /drf/ reads request.data.get(): a JSON array would be its
    # own AttributeError, not ours.
    assume(not (path == "/drf/" and "json" in content_type.lower()))
    response = Client().generic(
        method,
        path + query,
        data=body,
        content_type=content_type,
        headers={**extra, "Idempotency-Key": key},
    )
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert b"Traceback" not in response.content
    assert_redis_holds_only_whole_records(redis_client)
    views.calls.clear()


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(list(Kind)),
    scope=st.one_of(st.text(), st.binary()),
    key=st.one_of(st.text(), st.binary()),
)
@pytest.mark.no_redis
def test_redis_key_names_never_carry_the_scope_or_the_key(kind, scope, key):
    # Naming a key needs no server.
    name = key_name("idem", record_id(kind, scope, key))
    assert KEY_NAME.fullmatch(name.encode()), name


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(st.sampled_from(list(Kind)), st.text(max_size=8), st.text(max_size=8)),
    b=st.tuples(st.sampled_from(list(Kind)), st.text(max_size=8), st.text(max_size=8)),
)
@pytest.mark.no_redis
def test_distinct_kind_scope_key_triples_never_share_a_record(a, b):
    assume(a != b)
    assert record_id(*a) != record_id(*b)


def tenant_scope(request: Any) -> str:
    """A scope taken straight from a client header (as a careless project might)."""
    return str(request.headers.get("X-Tenant", ""))


glob_text = st.text(alphabet="ab*?[]{}\\:^!-", min_size=1, max_size=8)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(tenant_a=glob_text, tenant_b=glob_text, key=glob_text)
def test_glob_characters_in_scopes_and_keys_never_reach_another_scope(
    settings, redis_client, tenant_a, tenant_b, key
):
    assume(tenant_a != tenant_b)
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "SCOPE": "tests.test_hostile.tenant_scope"}
    redis_client.flushall()
    client = Client()

    def post(tenant: str) -> Any:
        return client.post(
            "/middleware/",
            data="{}",
            content_type="application/json",
            headers={"Idempotency-Key": key, "X-Tenant": tenant},
        )

    first = post(tenant_a)
    other = post(tenant_b)
    assert first.status_code == other.status_code == 201
    assert "Idempotent-Replayed" not in other
    assert post(tenant_a)["Idempotent-Replayed"] == "true"
    assert redis_client.dbsize() == 2  # two records
    views.calls.clear()


def test_purge_of_a_glob_like_key_deletes_that_record_only(redis_client, settings):
    pytest.importorskip("django_idempotency.management.commands.idempotency_inspect")
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "SCOPE": "tests.test_hostile.tenant_scope"}
    client = Client()
    tenants = ["t*", "t1", "t?"]
    keys_ = ["*", "a*", "[a]", "a", "?", "\\*"]
    for tenant in tenants:
        for key in keys_:
            client.post("/middleware/", headers={"Idempotency-Key": key, "X-Tenant": tenant})
    records = set(redis_client.scan_iter("idem:{*}"))
    assert len(records) == len(tenants) * len(keys_)
    call_command("idempotency_inspect", "purge", "*", "--scope", "t*", "--yes", stdout=_Null())
    left = set(redis_client.scan_iter("idem:{*}"))
    gone = records - left
    assert gone == {name_of(HTTP, "t*", "*").encode()}


class _Null:
    def write(self, *args: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def test_a_flood_of_10000_distinct_keys_is_bounded_by_the_ttl(redis_client, settings):
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "TTL": 3, "LOCK_TTL": 3}
    views.calls.clear()
    baseline = redis_client.info("memory")["used_memory"]
    peak = {"keys": 0, "memory": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            peak["keys"] = max(peak["keys"], redis_client.dbsize())
            peak["memory"] = max(peak["memory"], redis_client.info("memory")["used_memory"])

    def flood(worker: int) -> None:
        client = Client()
        for i in range(2500):
            key = f"flood-{worker}-{i}"
            response = client.post(
                "/middleware/",
                data=key,
                content_type="text/plain",
                headers={"Idempotency-Key": key},
            )
            assert response.status_code == 201

    watcher = threading.Thread(target=watch)
    watcher.start()
    floods = [threading.Thread(target=flood, args=(w,)) for w in range(4)]
    started = time.monotonic()
    for t in floods:
        t.start()
    for t in floods:
        t.join()
    flood_seconds = time.monotonic() - started
    done.set()
    watcher.join()
    assert views.calls["middleware"] == 10_000
    # Nothing the flood wrote lives longer than the TTL...
    assert_redis_holds_only_whole_records(redis_client)
    deadline = time.monotonic() + 3 + 15
    while redis_client.dbsize():
        assert time.monotonic() < deadline, redis_client.dbsize()
        time.sleep(0.2)
    # ...and the memory is given back.
    after = redis_client.info("memory")["used_memory"]
    assert after < baseline + 512 * 1024, (baseline, peak, after)
    print(
        f"\nflood: 10,000 keys in {flood_seconds:.1f} s; peak {peak['keys']} Redis keys, "
        f"{peak['memory'] / 1e6:.1f} MB; after expiry {after / 1e6:.2f} MB "
        f"(baseline {baseline / 1e6:.2f} MB)"
    )
