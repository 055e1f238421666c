"""Redis clients from ``IDEMPOTENCY["REDIS"]``: the one place that interprets that setting.

``REDIS`` is a django-redis cache alias, a ``redis://`` / ``rediss://`` / ``unix://`` URL,
or a callable returning a redis-py client (``RedisCluster``, a Sentinel ``master_for``
client, anything). The blocking doors use that client. The asyncio doors need a
``redis.asyncio`` client on the same server: it is derived from the blocking one (same
address, database, credentials, TLS and timeouts; Cluster and Sentinel included), or
comes from ``IDEMPOTENCY["ASYNC_REDIS"]`` when that is set.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

#: Connections one event loop's asyncio pool may open; commands queue beyond that, so a
#: burst of thousands of coroutines never fails for want of a connection.
ASYNC_POOL_SIZE = 50

_clients: dict[Any, Any] = {}
_clients_lock = threading.Lock()


def _checkout_args() -> tuple[str, ...]:
    parameter = inspect.signature(redis.ConnectionPool.get_connection).parameters.get(
        "command_name"
    )
    needed = parameter is not None and parameter.default is inspect.Parameter.empty
    return ("EVALSHA",) if needed else ()


#: What ``get_connection()`` of a pool (blocking or asyncio) is called with: redis-py
#: before 5.3 wants a command name (it ignores it), later releases deprecate passing one.
CHECKOUT_ARGS = _checkout_args()


def sync_client(target: str | Callable[[], Any]) -> Any:
    """The blocking client for the ``REDIS`` setting (shared per process).

    An alias goes through django-redis's ``get_redis_connection``, so the cache's pool
    and options apply; a URL through ``redis.Redis.from_url``; a factory is called once.
    """
    if isinstance(target, str) and "://" not in target:
        from django_redis import get_redis_connection

        return get_redis_connection(target)
    with _clients_lock:
        client = _clients.get(target)
        if client is None:
            client = redis.Redis.from_url(target) if isinstance(target, str) else target()
            _clients[target] = client
        return client


def cache_alias(target: Any) -> str | None:
    """The django-redis cache alias ``target`` names, or ``None`` (URL or factory)."""
    if isinstance(target, str) and "://" not in target and "." not in target:
        return target
    return None


#: How long the deployment check waits for Redis to answer.
PROBE_TIMEOUT = 3.0


def memory_policies(target: str | Callable[[], Any]) -> dict[str, tuple[str | None, int]]:
    """``{node: (maxmemory_policy, maxmemory)}`` of the server(s) behind ``target``.

    Asks with ``INFO memory`` (allowed where ``CONFIG`` is not, as on managed Redis); on
    Redis Cluster every primary is asked. A URL gets a throwaway client with short
    timeouts, not the app's shared one.
    """
    # Typed by redis-py as sync-or-async (Awaitable | Any) in its older releases.
    info: Any
    if isinstance(target, str) and "://" in target:
        client = redis.Redis.from_url(
            target, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
        )
        try:
            info = client.info("memory")
        finally:
            client.close()  # type: ignore[no-untyped-call,unused-ignore]  # redis-py < 5.1
    else:
        client = sync_client(target)
        if isinstance(client, RedisCluster):
            info = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        else:
            info = client.info("memory")
    per_node = {"redis": info} if "maxmemory" in info else info
    return {
        str(node): (
            None
            if node_info.get("maxmemory_policy") is None
            else str(node_info["maxmemory_policy"]),
            int(node_info.get("maxmemory", 0)),
        )
        for node, node_info in per_node.items()
    }


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a Redis Cluster client (sync or asyncio)."""
    return isinstance(client, (RedisCluster, redis.asyncio.cluster.RedisCluster))


_ASYNC_CLASSES: dict[type[Any], type[Any]] = {
    redis.connection.Connection: redis.asyncio.connection.Connection,
    redis.connection.SSLConnection: redis.asyncio.connection.SSLConnection,
    redis.connection.UnixDomainSocketConnection: (
        redis.asyncio.connection.UnixDomainSocketConnection
    ),
}


#: Connection options that mean the same to the blocking and the asyncio clients.
_PORTABLE = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "retry_on_timeout",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "client_name",
        "lib_name",
        "lib_version",
        "health_check_interval",
        "protocol",
        "credential_provider",
    }
)


def _accepted(cls: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The portable ``kwargs`` that ``cls`` accepts (address, credentials, timeouts, TLS).

    Blocking-only ones (a ``Retry``, a pool, maintenance-notification handlers) are left
    out: the asyncio client makes its own.
    """
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= set(inspect.signature(init).parameters)
    return {
        k: v
        for k, v in kwargs.items()
        if (k in _PORTABLE or k.startswith("ssl_")) and (k in names or "kwargs" in names)
    }


def async_client_from(client: Any) -> Any:
    """A ``redis.asyncio`` client reaching the same server(s) as the blocking ``client``."""
    if isinstance(client, RedisCluster):
        kwargs = dict(client.nodes_manager.connection_kwargs)
        startup = [
            redis.asyncio.cluster.ClusterNode(node.host, node.port)
            for node in client.get_nodes()  # type: ignore[no-untyped-call,unused-ignore]
        ]
        accepted = _accepted(redis.asyncio.cluster.RedisCluster, kwargs)
        for name in ("host", "port", "startup_nodes"):  # the nodes are given below
            accepted.pop(name, None)
        # redis-py 5.0 declares connection_pool abstract on it.
        return redis.asyncio.cluster.RedisCluster(  # type: ignore[abstract,unused-ignore]
            startup_nodes=startup, **accepted
        )
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if isinstance(pool, SentinelConnectionPool):
        manager = pool.sentinel_manager
        sentinels = [
            (
                s.connection_pool.connection_kwargs["host"],
                s.connection_pool.connection_kwargs["port"],
            )
            for s in manager.sentinels
        ]
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            sentinels,
            sentinel_kwargs=_accepted(redis.asyncio.connection.Connection, manager.sentinel_kwargs),
            **_accepted(redis.asyncio.connection.Connection, kwargs),
        )
        return sentinel.master_for(pool.service_name)
    connection_class = _ASYNC_CLASSES.get(pool.connection_class)
    if connection_class is None:
        raise TypeError(
            f"cannot derive an asyncio client from connections of {pool.connection_class!r}; "
            'set IDEMPOTENCY["ASYNC_REDIS"] to a callable returning a redis.asyncio client'
        )
    async_pool = redis.asyncio.BlockingConnectionPool(
        connection_class=connection_class,
        max_connections=ASYNC_POOL_SIZE,
        timeout=kwargs.get("socket_timeout") or 20,
        **_accepted(connection_class, kwargs),
    )
    return redis.asyncio.Redis(connection_pool=async_pool)
