"""Each test its own, empty idempotency store, on the store the project's settings name.

Django's ``TestCase`` rolls the database back after each test, but idempotency records
live in the store, outside the database: the first test that POSTs with the key
``"test-key"`` would leave a record that the next test (and the next run, and the
development server sharing that Redis) gets replayed. :func:`isolated_store` gives the
code inside it records of its own:

- every engine built inside the block (the first protected request builds one; every
  ``override_settings`` of ``IDEMPOTENCY`` builds another) writes under a key prefix of
  its own, ``<KEY_PREFIX>:test-<random>``, on the store the settings name: the
  in-memory store where ``IDEMPOTENCY["STORE"]`` asks for it, else the project's Redis;
- on exit, the records it claimed are deleted (running ones too). They are remembered
  as they are claimed, so cleaning up costs one round trip per test that wrote records,
  not a scan of the Redis (which may hold a development server's millions of keys).

Other records on that Redis (the development server's, another test run's) are neither
seen nor touched: a record's name starts with its prefix, and listings and purges
(``idempotency_inspect``, the admin) select ``<KEY_PREFIX>:{...}`` only. A test that
never reaches a protected view builds no engine and never contacts the store.

The pytest plugin (:mod:`.pytest_plugin`) wraps every test in it; Django's test runner
does with ``TEST_RUNNER = "django_idempotency.testing.runner.IsolatedTestRunner"``.
Records written in ``setUpClass``/``setUpTestData`` or by class- or session-scoped
fixtures are made before the test's block opens, so they land in the shared store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Iterator
from typing import Any

from ..conf import IdempotencySettings
from ..engine import Engine
from ..runtime import build_engine, engines_built_by
from ..stores.base import ClaimReply, Slot, StoreError

logger = logging.getLogger("django_idempotency")


def prefix_for(settings: IdempotencySettings, tag: str) -> str:
    """The key prefix of one test's records: below the project's, never matching it."""
    return f"{settings.KEY_PREFIX}:{tag}"


@contextlib.contextmanager
def isolated_store() -> Iterator[None]:
    """Inside the block, idempotency records live apart, and are deleted on exit."""
    tag = f"test-{secrets.token_hex(8)}"
    built: list[tuple[Engine, set[str]]] = []

    def build(settings: IdempotencySettings) -> Engine:
        claimed: set[str] = set()
        store = settings.STORE
        own = dataclasses.replace(
            settings,
            KEY_PREFIX=prefix_for(settings, tag),
            STORE=lambda s: Recording(store(s), claimed),
        )
        engine = build_engine(own)
        built.append((engine, claimed))
        return engine

    try:
        with engines_built_by(build):
            yield
    finally:
        for engine, claimed in built:
            remove_records(engine, claimed)


def remove_records(engine: Engine, names: set[str]) -> None:
    """Delete the records ``names`` from ``engine``'s store, running ones included.

    A store that cannot be reached (a test that stopped Redis on purpose) is logged, not
    raised: the records left behind expire with their TTL, under a prefix nothing reads.
    """
    scanner = engine.store.scanner()
    try:
        for node, group in scanner.groups(sorted(names)):
            scanner.delete_checked(node, group, _any_record, _whole)
    except StoreError as exc:
        logger.warning("could not remove a test's idempotency records: %s", exc)
    finally:
        engine.close()


def _any_record(name: str, head: bytes) -> bool:
    return True


def _whole(head: bytes) -> bool:
    return True


class Recording:
    """A store that remembers the name of every record claimed through it (then delegates)."""

    def __init__(self, store: Any, claimed: set[str]) -> None:
        self._store = store
        self._claimed = claimed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def claim(self, slot: Slot, running: bytes, lease_ms: int) -> ClaimReply:
        """Remember ``slot``, then claim it."""
        self._claimed.add(slot.name)
        reply: ClaimReply = self._store.claim(slot, running, lease_ms)
        return reply

    def aio(self) -> AsyncRecording:
        """The asyncio store, remembering its claims in the same set."""
        return AsyncRecording(self._store.aio(), self._claimed)


class AsyncRecording:
    """:class:`Recording` for the asyncio store."""

    def __init__(self, store: Any, claimed: set[str]) -> None:
        self._store = store
        self._claimed = claimed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim(self, slot: Slot, running: bytes, lease_ms: int) -> ClaimReply:
        """Remember ``slot``, then claim it."""
        self._claimed.add(slot.name)
        reply: ClaimReply = await self._store.claim(slot, running, lease_ms)
        return reply
