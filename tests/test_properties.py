"""Property tests: whatever a client sends, never a 500 and never a half-stored record."""

from __future__ import annotations

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import views
from .support.records import RUNNING, opened

keys = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    st.builds(lambda s: f'"{s}"', st.text(max_size=40)),
)
bodies = st.one_of(st.binary(max_size=2048), st.text(max_size=512).map(str.encode))
methods = st.sampled_from(["POST", "PATCH", "PUT", "DELETE", "GET"])
paths = st.sampled_from(["/middleware/", "/decorator/", "/drf/", "/middleware/?q=%00%ff"])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=keys, body=bodies, method=methods, path=paths)
def test_any_key_method_and_body_never_500_or_half_stored(redis_client, key, body, method, path):
    client = Client()
    response = client.generic(
        method,
        path,
        data=body,
        content_type="application/octet-stream",
        headers={"Idempotency-Key": key},
    )
    assert response.status_code < 500
    assert b"Traceback" not in response.content
    for name in redis_client.scan_iter("idem:{*}"):
        assert opened(redis_client, name).state != RUNNING  # every request settled its record
    views.calls.clear()


@pytest.mark.parametrize("door", ["/middleware/", "/drf/"])
def test_two_mib_body_is_handled(client, door):
    body = b"\xff" * (2 * 1024 * 1024)
    response = client.post(
        door, data=body, content_type="application/octet-stream", headers={"Idempotency-Key": "big"}
    )
    assert response.status_code < 500
