"""The Redis store: the only package of django-idempotency that imports ``redis``.

``open_store(settings)`` builds the store the engine uses from ``IDEMPOTENCY["REDIS"]``
(and ``ASYNC_REDIS``); the modules hold the connection building, the Lua scripts, the
blocking and asyncio stores, the notifier and the scanning done for ``idempotency_inspect``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import record_name as key_name
from .connection import sync_client
from .store import RedisStore, channel_name, record_pattern

if TYPE_CHECKING:
    from ...conf import IdempotencySettings

__all__ = ["RedisStore", "channel_name", "key_name", "open_store", "record_pattern"]


def open_store(settings: IdempotencySettings) -> RedisStore:
    """The store for the current settings (its client is shared by the process)."""
    client = sync_client(settings.REDIS)
    factory: Any = settings.ASYNC_REDIS
    return RedisStore(client, settings.KEY_PREFIX, async_client=factory)
