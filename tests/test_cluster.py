"""The core, the HTTP doors and idempotency_inspect again, on a 3-primary Redis Cluster.

The tests of ``test_run``, ``test_doors`` and (most of) ``test_inspect`` are
imported and collected here a second time; the fixtures below point
``IDEMPOTENCY["REDIS"]`` at the cluster (a dotted path to a factory returning
``redis.cluster.RedisCluster``, as a project would configure it) and
``redis_client`` at a cluster client.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
from redis.cluster import ClusterNode, RedisCluster

from django_idempotency import ResultNotStored, run
from django_idempotency.service import get_service

from . import test_doors, test_inspect
from .support.topologies import RedisClusterHarness
from .test_run import (  # noqa: F401  collected again, against the cluster
    Counter,
    test_64_threads_with_one_key_run_the_action_once,
    test_arun_runs_a_coroutine_once_for_concurrent_callers,
    test_distinct_keys_never_share_a_record,
    test_error_is_stored_and_reraised_on_replay,
    test_keeper_reports_a_lost_lease_once_with_the_signal,
    test_late_finisher_whose_lease_was_lost_does_not_overwrite_new_owner,
    test_long_action_keeps_its_claim_through_renewal,
    test_namespaces_separate_equal_keys_even_with_colons,
    test_record_expires_after_ttl_and_action_runs_again,
    test_redis_keys_never_contain_the_client_key,
    test_second_call_replays_value_without_running_action,
    test_should_ignore_error_releases_the_key_so_the_next_call_runs,
    test_unserializable_result_is_never_run_twice,
    test_waiter_is_woken_on_completion_not_by_polling,
    test_waiter_times_out_with_idempotency_timeout,
)

pytestmark = pytest.mark.slow

# Every HTTP door test (and the fixtures they use) runs here too.
for _name, _value in vars(test_doors).items():
    if _name.startswith("test_") or _name in {"door", "url", "_reset_calls"}:
        globals()[_name] = _value

# idempotency_inspect's tests that need only the app's Redis and a few records.
_INSPECT_FIXTURES = {"redis_client", "some", "varied", "settings", "monkeypatch"}
_INSPECT_STANDALONE_ONLY = {
    # 200,000 records: 9 s on one server, 35 s on the cluster; covered by
    # test_inspect's own cluster test at 3,000 records.
    "test_purge_state_done_deletes_exactly_the_done_ones_and_running_ones_need_force",
    # Hands the whole client to a per-node internal, and counts one SCAN batch.
    "test_purge_rereads_a_batch_whose_watch_fired",
    "test_progress_goes_to_a_terminal_stderr_only",
}
for _name, _value in vars(test_inspect).items():
    if _name in {"some", "varied"} or (
        _name.startswith("test_")
        and _name not in _INSPECT_STANDALONE_ONLY
        and "no_redis" not in {m.name for m in getattr(_value, "pytestmark", [])}
        and set(inspect.signature(_value).parameters) <= _INSPECT_FIXTURES
    ):
        globals()[_name] = _value

#: Where the session's cluster listens; set by the ``redis_cluster`` fixture (and in
#: child processes by ``_child_run``).
NODES: list[tuple[str, int]] = []
SOCKET_TIMEOUT = 5.0


def cluster_client() -> RedisCluster:
    """The ``IDEMPOTENCY["REDIS"]`` factory: one node is enough to discover the rest."""
    host, port = NODES[0]
    return RedisCluster(
        host=host, port=port, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=2
    )


def short_timeout_cluster_client() -> RedisCluster:
    host, port = NODES[0]
    return RedisCluster(host=host, port=port, socket_timeout=0.3, socket_connect_timeout=2)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterHarness]:
    with RedisClusterHarness(3) as cluster:
        NODES[:] = cluster.startup_nodes
        yield cluster


class WholeCluster(RedisCluster):
    """A cluster client whose KEYS and DBSIZE cover every primary, as the tests assume.

    (``RedisCluster`` sends them to one random node.)
    """

    def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        return super().keys(pattern, target_nodes=self.PRIMARIES, **kwargs)

    def dbsize(self, **kwargs: Any) -> Any:
        return super().dbsize(target_nodes=self.PRIMARIES)


@pytest.fixture
def redis_client(redis_cluster: RedisClusterHarness) -> Iterator[RedisCluster]:
    """A cluster client on empty primaries (overrides conftest's single server)."""
    client = WholeCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in redis_cluster.startup_nodes]
    )
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def idempotency_settings(settings: Any, redis_client: RedisCluster) -> Any:
    """Point the app at the cluster (overrides conftest's fixture of the same name)."""
    settings.IDEMPOTENCY = {
        "REDIS": "tests.test_cluster.cluster_client",
        "LOCK_TTL": 5,
        "WAIT_TIMEOUT": 5,
    }
    return settings


def test_the_app_talks_to_the_cluster_and_records_spread_over_every_primary(redis_cluster):
    assert isinstance(get_service().store.client, RedisCluster)
    for i in range(30):
        run(f"spread-{i}", lambda: "v")
    per_node = [
        sum(1 for _ in node.client().scan_iter("idem:{*}")) for node in redis_cluster.primaries
    ]
    assert sum(per_node) == 30
    assert all(per_node), per_node


def test_record_and_wake_list_share_one_slot(redis_client):
    store = get_service().store
    for key in ("a", "b:c", "*", "{brace}"):
        slot = store.slot("r", "scope", key)
        assert redis_client.keyslot(slot.record_key) == redis_client.keyslot(slot.wake_key)


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
        "REDIS": "tests.test_cluster.short_timeout_cluster_client",
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

    NODES[:] = nodes
    settings.IDEMPOTENCY = {
        "REDIS": "tests.test_cluster.cluster_client",
        "LOCK_TTL": 5,
        "WAIT_TIMEOUT": 10,
    }
    counter = cluster_client()

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
        results = pool.starmap(_child_run, [(list(NODES), "proc-key", barrier)] * 4)
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
