"""The Redis side: key layout and the size of what a record costs."""

from __future__ import annotations

from django_idempotency.records import Kind, record_id


def test_record_ids_are_unambiguous_over_door_scope_and_key():
    ids = {
        record_id(Kind.HTTP, "ab", "c"),
        record_id(Kind.HTTP, "a", "bc"),
        record_id(Kind.RUN, "ab", "c"),
        record_id(Kind.HTTP, b"ab", b"c\x00"),
    }
    assert len(ids) == 4
    assert all(len(i) == 12 for i in ids)  # 96 bits: 16 base64url characters in a key name
