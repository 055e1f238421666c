"""Fixtures: private redis-servers and PostgreSQL for the session, a clean database per test.

Tests run on a single server unless marked ``@pytest.mark.topologies("single",
"cluster")`` (or a module's ``pytestmark``): then they run once per topology, as
django-redis runs its suite over its settings modules. The ``topology`` fixture
starts what the test needs (a 3-primary cluster only when some test asks for it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster

from .support import topologies
from .support.postgres import PostgresServer, unavailable_reason
from .support.redis_server import RedisServer, pin_build

# A build word in $IDEMPOTENCY_REDIS_SERVER becomes its binary's path, so the processes
# tests start (the example project's embedded Redis) run the build the suite runs on.
pin_build()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("topologies")
    if marker is not None and "topology" in metafunc.fixturenames:
        metafunc.parametrize("topology", marker.args, indirect=True)


@dataclass(frozen=True)
class Topology:
    """One Redis topology the app can be pointed at."""

    name: str
    #: What ``IDEMPOTENCY["REDIS"]`` is set to.
    setting: str
    #: A URL, for the single server only.
    url: str | None
    server: Any

    def client(self) -> Any:
        """A plain client on it (for the cluster: one that sees every primary)."""
        if self.name == "cluster":
            return topologies.WholeCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in self.server.startup_nodes]
            )
        return self.server.client()

    def flush(self) -> None:
        """Empty every node."""
        client = self.client()
        if self.name == "cluster":
            client.flushall(target_nodes=RedisCluster.PRIMARIES)
        else:
            client.flushall()
        client.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, without persistence, for the whole session."""
    with RedisServer() as server:
        os.environ["REDIS_URL"] = server.url
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server on a free port, for the whole session (started on first use).

    Skips, saying why in one line, where PostgreSQL cannot run (``make pytest`` installs it
    where it can: scripts/ensure-postgresql). Connect with ``postgres.connect()``, point
    Django at it with ``postgres.django_database(name)``, or a subprocess with
    ``postgres.environ(name)`` and ``DJANGO_SETTINGS_MODULE=tests.support.pg_settings``.
    """
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_database(postgres: PostgresServer) -> Iterator[str]:
    """The name of a new, empty database on the session's PostgreSQL, dropped afterwards."""
    name = postgres.create_database(f"test_{uuid.uuid4().hex[:12]}")
    yield name
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[topologies.RedisClusterHarness]:
    """A 3-primary Redis Cluster, started on first use."""
    with topologies.RedisClusterHarness(3) as cluster:
        topologies.NODES[:] = cluster.startup_nodes
        yield cluster


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> Topology | None:
    """The topology this test runs on (``None`` for tests marked ``no_redis``)."""
    if "no_redis" in request.keywords:
        return None
    name = getattr(request, "param", "single")
    if name == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return Topology("cluster", "tests.support.topologies.cluster_client", None, cluster)
    server = request.getfixturevalue("redis_server")
    return Topology("single", server.url, server.url, server)


@pytest.fixture
def redis_url(topology: Topology | None) -> str:
    """The single server's URL (tests that need a URL run on the single server only)."""
    assert topology is not None and topology.url is not None, "a single-server test"
    return topology.url


@pytest.fixture
def redis_client(request: pytest.FixtureRequest, topology: Topology | None) -> Iterator[Any]:
    """A plain client on the test's Redis (for inspecting what the app stored).

    A ``no_redis`` test (the app is not pointed anywhere) gets one on the session server.
    """
    if topology is None:
        client = request.getfixturevalue("redis_server").client()
    else:
        client = topology.client()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def idempotency_settings(
    request: pytest.FixtureRequest, settings: Any, topology: Topology | None
) -> Any:
    """Point django-redis and the app at an empty Redis of the test's topology."""
    if topology is None:
        return settings
    topology.flush()
    if topology.url is not None:
        settings.CACHES = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": topology.url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
            }
        }
    settings.IDEMPOTENCY = {"REDIS": topology.setting, "LOCK_TTL": 5, "WAIT_TIMEOUT": 5}
    return settings
