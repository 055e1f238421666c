"""Helpers for your own tests.

:func:`assert_idempotent` checks, from a test, that one endpoint keeps every idempotency
promise; :class:`RedisServer` runs a throwaway ``redis-server`` for tests that need Redis.
"""

from .assertions import PromiseBroken, assert_idempotent
from .server import ConfigValue, RedisServer, RedisServerError, find_redis_server

__all__ = [
    "ConfigValue",
    "PromiseBroken",
    "RedisServer",
    "RedisServerError",
    "assert_idempotent",
    "find_redis_server",
]
