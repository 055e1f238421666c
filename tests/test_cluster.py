"""Redis Cluster only: what a single server cannot show.

The core, the HTTP doors and most of ``idempotency_inspect`` run on the cluster too,
through the ``topology`` fixture (``@pytest.mark.topologies("single", "cluster")`` in
``test_run``, ``test_doors`` and ``test_inspect``); this module holds the tests that
only make sense on a cluster. ``IDEMPOTENCY["REDIS"]`` is a dotted path to a factory
returning ``redis.cluster.RedisCluster``, as a project would configure it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

import django
import pytest
from redis.cluster import RedisCluster

from django_idempotency import ResultNotStored, run
from django_idempotency.records import Kind
from django_idempotency.runtime import get_engine

from .support import topologies
from .test_run import Counter

pytestmark = [pytest.mark.slow, pytest.mark.topologies("cluster"), pytest.mark.core]


def test_the_app_talks_to_the_cluster_and_records_spread_over_every_primary(redis_cluster):
    store: Any = get_engine().store
    assert isinstance(store.client, RedisCluster)
    for i in range(30):
        run(f"spread-{i}", lambda: "v")
    per_node = [
        sum(1 for _ in node.client().scan_iter("idem:{*}")) for node in redis_cluster.primaries
    ]
    assert sum(per_node) == 30
    assert all(per_node), per_node


def test_a_records_key_is_its_own_hash_tag_whatever_the_client_key(redis_client):
    engine = get_engine()
    for key in ("a", "b:c", "*", "{brace}", "x}y{z"):
        name = engine.slot(Kind.RUN, "scope", key).name
        tag = name[name.index("{") + 1 : name.index("}")]
        assert redis_client.keyslot(name) == redis_client.keyslot(tag)


def test_many_leases_of_one_process_are_renewed_on_the_cluster():
    # RedisCluster refuses scripts in a pipeline: renewals due together must still work.
    counter = Counter()
    barrier = threading.Barrier(6)
    results: list[Any] = []
    errors: list[BaseException] = []

    def slow(i: int) -> Any:
        def action() -> int:
            counter.bump()
            time.sleep(1.2)  # four times the lease below: it must be renewed
            return i

        barrier.wait()
        try:
            results.append(run(f"lease-{i}", action, lock_ttl=0.3))
        except ResultNotStored as exc:
            errors.append(exc)

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == list(range(6))
    assert [run(f"lease-{i}", lambda: -1) for i in range(6)] == list(range(6))
    assert counter.n == 6


def test_a_wait_longer_than_the_cluster_socket_timeout_is_not_an_outage(settings):
    settings.IDEMPOTENCY = {
        "REDIS": "tests.support.topologies.short_timeout_cluster_client",
        "WAIT_TIMEOUT": 5,
    }

    def slow() -> str:
        time.sleep(1.0)  # three socket timeouts
        return "done"

    owner = threading.Thread(target=run, args=("sliced", slow))
    owner.start()
    time.sleep(0.1)
    assert run("sliced", lambda: "never") == "done"
    owner.join()


def test_scripts_are_reloaded_after_the_cluster_forgets_them(redis_client):
    assert run("before-flush", lambda: 1) == 1
    redis_client.script_flush()  # on every primary
    assert run("after-flush", lambda: 2) == 2
    assert run("before-flush", lambda: 3) == 1


def _child_run(nodes: list[tuple[str, int]], key: str, barrier: Any) -> dict[str, Any]:
    """Run in a spawned child (after ``django.setup``): one ``run()`` on the cluster."""
    from django.conf import settings

    topologies.NODES[:] = nodes
    settings.IDEMPOTENCY = {
        "REDIS": "tests.support.topologies.cluster_client",
        "LOCK_TTL": 5,
        "WAIT_TIMEOUT": 10,
    }
    counter = topologies.cluster_client()

    def action() -> dict[str, Any]:
        counter.incr("executions")
        time.sleep(0.5)
        return {"pid": os.getpid()}

    barrier.wait()
    return run(key, action)


def test_4_processes_with_one_key_run_the_action_once_on_the_cluster(redis_client):
    assert os.environ.get("DJANGO_SETTINGS_MODULE")  # inherited by the children
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(4)
    # django.setup first, so the children can import this module (it imports models).
    with ctx.Pool(4, initializer=django.setup) as pool:
        results = pool.starmap(_child_run, [(list(topologies.NODES), "proc-key", barrier)] * 4)
    assert int(redis_client.get("executions")) == 1
    assert len({r["pid"] for r in results}) == 1


def test_eviction_check_asks_every_primary(redis_cluster):
    from django_idempotency import checks

    assert checks.check_eviction_policy() == []
    risky = redis_cluster.primaries[1]
    client = risky.client()
    client.config_set("maxmemory", 100 * 1024 * 1024)
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        messages = checks.check_eviction_policy()
    finally:
        client.config_set("maxmemory", 0)
        client.config_set("maxmemory-policy", "noeviction")
    assert [m.id for m in messages] == ["django_idempotency.W001"]
    assert f"{risky.host}:{risky.port} (allkeys-lru)" in messages[0].msg
