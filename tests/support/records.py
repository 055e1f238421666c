"""Records for tests: written straight in the stored format (sealed as the app seals them)."""

from __future__ import annotations

from typing import Any

from django_idempotency.conf import get_settings
from django_idempotency.events import Door
from django_idempotency.records import (
    Kind,
    Record,
    Sealer,
    State,
    encode_http,
    record_id,
    text_bytes,
)
from django_idempotency.runtime import get_engine, sealer_for
from django_idempotency.stores.redis import key_name

DONE, ERROR, RUNNING, UNREPLAYABLE = State.DONE, State.ERROR, State.RUNNING, State.UNREPLAYABLE
HTTP, RUN = Kind.HTTP, Kind.RUN
#: The owner token of running records written here.
TOKEN = bytes.fromhex("0123456789abcdef01234567")


def sealed(
    state: str,
    kind: Kind,
    scope: str,
    key: str,
    *,
    created_ms: int,
    status: int = 201,
    body: bytes = b'{"ok":true}',
    sealer: Sealer | None = None,
    prefix: str = "idem",
    door: Door | None = None,
) -> tuple[str, bytes]:
    """(Redis key, stored bytes) of one record, as the engine would write it.

    The door defaults to the middleware for HTTP records and ``run()`` for the others.
    """
    door = door or (Door.MIDDLEWARE if kind is Kind.HTTP else Door.RUN)
    sealer = sealer or sealer_for(get_settings())
    rid = record_id(kind, scope, key)
    fingerprint = b"\xf1" * 16 if kind is Kind.HTTP else b""
    s, k = text_bytes(scope), text_bytes(key)
    if State(state) is State.RUNNING:
        raw = sealer.running(rid, kind, s, k, TOKEN, fingerprint, created_ms, door)
        return key_name(prefix, rid), raw
    if State(state) is State.UNREPLAYABLE:
        payload = b"it was a streaming response."
    elif kind is Kind.HTTP and State(state) is State.DONE:
        payload = encode_http([("Content-Type", "application/json")], body)
    else:
        payload = body
    record = Record(
        state=State(state),
        kind=kind,
        scope=s,
        key=k,
        fingerprint=fingerprint,
        created_ms=created_ms,
        finished_ms=created_ms + 5,
        status=status if kind is Kind.HTTP else None,
        payload=payload,
        door=door,
    )
    return key_name(prefix, rid), sealer.seal(rid, record)


def opened(client: Any, name: str | bytes) -> Record:
    """The record stored under ``name``, verified and decoded as the engine reads it."""
    record = opened_if_present(client, name)
    assert record is not None, f"no record under {name!r}"
    return record


def opened_if_present(client: Any, name: str | bytes) -> Record | None:
    """Like :func:`opened`, but ``None`` when the key has expired (one GET, no race)."""
    import base64

    text = name.decode() if isinstance(name, bytes) else name
    rid = base64.urlsafe_b64decode(text[text.rindex("{") + 1 : -1] + "==")
    raw = client.get(text)
    return None if raw is None else get_engine().sealer.open(rid, raw)


def name_of(kind: Kind, scope: str | bytes, key: str | bytes) -> str:
    """The Redis key of a record."""
    return get_engine().slot(kind, scope, key).name
