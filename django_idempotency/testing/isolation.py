"""Each test its own, empty idempotency store, on the store the project's settings name.

Records live outside the database, so ``TestCase``'s rollback leaves them behind for the
next test to replay. :func:`isolated_store` makes every engine built inside it (by the
first protected request, or by an ``override_settings``) write under a prefix of its own
and remembers each record it claims, so clean-up deletes those by name: one round trip,
never a scan of a Redis that may hold a development server's millions of keys.
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
from ..stores.base import Slot, StoreError

logger = logging.getLogger("django_idempotency")


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
            KEY_PREFIX=f"{settings.KEY_PREFIX}:{tag}",  # below the project's, never matching it
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
            scanner.delete_checked(node, group, _always, _always)
    except StoreError as exc:
        logger.warning("could not remove a test's idempotency records: %s", exc)
    finally:
        engine.close()


def _always(*args: object) -> bool:
    """Every record is wanted and complete as read: a test's records go, running or not."""
    return True


class Recording:
    """A store that remembers the name of every record claimed through it (then delegates).

    One class for the sync and the asyncio store: ``claim`` hands back what the wrapped
    store's returns, a reply or the awaitable of one.
    """

    def __init__(self, store: Any, claimed: set[str]) -> None:
        self._store = store
        self._claimed = claimed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def claim(self, slot: Slot, running: bytes, lease_ms: int) -> Any:
        """Remember ``slot``, then claim it."""
        self._claimed.add(slot.name)
        return self._store.claim(slot, running, lease_ms)

    def aio(self) -> Recording:
        """The asyncio store, remembering its claims in the same set."""
        return Recording(self._store.aio(), self._claimed)
