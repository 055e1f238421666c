"""``manage.py idempotency_inspect`` and the inventory under it, on real Redis servers.

The large tests share one private server holding 200,000 records written straight
in the record format (pipelines of 10,000), so it is filled once per module.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from django_idempotency import run
from django_idempotency.conf import get_settings
from django_idempotency.engine import now_ms
from django_idempotency.inventory import Filters, Inventory
from django_idempotency.inventory.display import parse_duration
from django_idempotency.management.commands.idempotency_inspect import Command
from django_idempotency.records import STATES, Sealer, peek
from django_idempotency.runtime import get_engine, sealer_for
from django_idempotency.testing import RedisServer

from .support.records import DONE, ERROR, HTTP, RUN, RUNNING, UNREPLAYABLE, sealed

ROOT = Path(__file__).resolve().parent.parent
#: The tests that need only a few records also run on a 3-primary Redis Cluster.
BOTH_TOPOLOGIES = pytest.mark.topologies("single", "cluster")
BIG = 200_000
COLUMNS = {"scope", "key", "state", "status", "age_seconds", "ttl_seconds", "size_bytes"}


# -- writing records directly ------------------------------------------------------------


def plan(i: int) -> tuple[str, Any]:
    """(state, kind) of record number ``i`` in the large data set."""
    if i % 1000 == 0:
        return RUNNING, HTTP
    if i % 10 == 1:
        return ERROR, RUN
    if i % 50 == 3:
        return UNREPLAYABLE, HTTP
    return DONE, RUN if i % 5 == 0 else HTTP


def write_records(client: Any, sealer: Sealer, count: int) -> Counter[str]:
    """Write ``count`` records following :func:`plan`; return how many of each state."""
    created = now_ms() - 3_600_000
    states: Counter[str] = Counter()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        state, kind = plan(i)
        states[state] += 1
        redis_key, data = sealed(
            state, kind, f"user:{i % 97}", f"key-{i}", created_ms=created + i, sealer=sealer
        )
        # Running leases are long so none runs out during the test.
        ttl = 600_000 if state == RUNNING else 86_400_000
        pipe.execute_command("SET", redis_key, data, "PX", ttl)
        if len(pipe) >= 10_000:
            pipe.execute()
    pipe.execute()
    return states


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[RedisServer, Counter[str]]]:
    """A private server with 200,000 records; tests on it only read."""
    with RedisServer() as server:
        client = server.client()
        states = write_records(client, sealer_for(get_settings()), BIG)
        client.close()
        yield server, states


@pytest.fixture
def on_big(big: tuple[RedisServer, Counter[str]], settings: Any) -> Iterator[Any]:
    """Point the app at the large server; yield a client on it with fresh command stats."""
    server, _ = big
    settings.IDEMPOTENCY = {"REDIS": server.url}
    client = server.client()
    client.config_resetstat()
    yield client
    client.close()


def states_left(*clients: Any) -> Counter[str]:
    """States of the records on these servers, each record once.

    Not through ``stats``: after a mass delete Redis shrinks its hash table, and a
    SCAN running meanwhile may return a key twice.
    """
    states: Counter[str] = Counter()
    for client in clients:
        keys = sorted(set(client.scan_iter("idem:{*}", count=1000)))
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.getrange(k, 0, 599)
        states.update(peek(head).state.value for head in pipe.execute())
    return states


def scan_calls(client: Any) -> int:
    return int(client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))


def inspect(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("idempotency_inspect", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


class CountingSink(io.TextIOBase):
    """A stdout that keeps only a line count, so the output itself costs no memory."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- 200,000 records ---------------------------------------------------------------------


def test_list_limit_10_answers_in_one_or_two_scan_calls_on_200k_records(on_big):
    out, _ = inspect("list", "--limit", "10")
    lines = out.splitlines()
    assert lines[0].split() == ["STATE", "STATUS", "AGE", "TTL", "SIZE", "KIND", "SCOPE", "KEY"]
    assert len(lines) == 11
    # COUNT 1000 returns ~1000 keys per call: the first call almost always suffices.
    assert scan_calls(on_big) <= 2
    assert "cmdstat_keys" not in on_big.info("commandstats")


def test_stats_counts_every_state_exactly_on_200k_records(on_big, big):
    _, states = big
    out, _ = inspect("stats", "--json")
    stats = json.loads(out)
    assert stats["total"] == BIG
    assert stats["by_state"] == {state: states[state] for state in STATES}
    assert stats["by_kind"]["http"] + stats["by_kind"]["run"] == BIG
    assert stats["by_door"]["middleware"] + stats["by_door"]["run"] == BIG
    assert stats["unreadable"] == 0
    assert stats["memory"]["sampled"] == 1000
    assert stats["memory"]["estimated_total_bytes"] > stats["stored_bytes"] / 2
    # The whole keyspace in SCAN batches of ~1000, never KEYS.
    assert BIG / 1000 <= scan_calls(on_big) <= BIG / 1000 * 2
    assert "cmdstat_keys" not in on_big.info("commandstats")


def test_listing_all_200k_records_peaks_under_50_mb_of_python_memory(on_big):
    sink = CountingSink()
    tracemalloc.start()
    try:
        call_command("idempotency_inspect", "list", stdout=sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.lines == BIG + 1  # and a header
    assert peak < 50 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    print(f"tracemalloc peak while listing {BIG:,} records: {peak / 2**20:.2f} MiB")


def test_purge_state_done_deletes_exactly_the_done_ones_and_running_ones_need_force(
    redis_client,
):
    states = write_records(redis_client, get_engine().sealer, BIG)
    out, _ = inspect("purge", "--state", "done", "--yes")
    assert out.splitlines() == [f"Deleted {states[DONE]:,} record(s)."]
    assert states_left(redis_client) == {s: states[s] for s in STATES if s != DONE}

    # Everything else: running records are kept, and the command says why.
    out, err = inspect("purge", "--all", "--yes")
    assert out.splitlines() == [f"Deleted {states[ERROR] + states[UNREPLAYABLE]:,} record(s)."]
    assert f"Keeping {states[RUNNING]} running record(s)" in err
    assert "a retry run the action a second time" in err
    assert "--force" in err
    assert states_left(redis_client) == {RUNNING: states[RUNNING]}

    out, err = inspect("purge", "--all", "--yes", "--force")
    assert out.splitlines() == [f"Deleted {states[RUNNING]} record(s)."]
    assert states_left(redis_client) == {}


# -- output ------------------------------------------------------------------------------


@pytest.fixture
def some(redis_client) -> dict[str, str]:
    """A few records through the real doors: two run() results, an error, an HTTP one."""
    run("order:1", lambda: {"amount": 5})
    run("order:*:odd", lambda: [1, 2], scope="billing")

    def fail() -> None:
        raise ValueError("card declined")

    with pytest.raises(ValueError):
        run("order:2", fail)
    response = Client().post(
        "/middleware/", data=b"hello", content_type="text/plain", HTTP_IDEMPOTENCY_KEY="pay-1"
    )
    assert response.status_code == 201
    return {"http": "pay-1"}


@BOTH_TOPOLOGIES
def test_json_list_parses_and_carries_every_column(some):
    out, _ = inspect("list", "--json")
    rows = json.loads(out)
    assert len(rows) == 4
    for row in rows:
        assert row.keys() >= COLUMNS
    by_key = {row["key"]: row for row in rows}
    http = by_key["pay-1"]
    assert http["scope"] == "anonymous"
    assert http["state"] == DONE
    assert http["status"] == 201
    assert http["kind"] == "http"
    assert http["door"] == "middleware"
    assert 0 <= http["age_seconds"] < 600
    assert 86_000 < http["ttl_seconds"] <= 86_400
    assert http["size_bytes"] > len("hello")
    assert by_key["order:2"]["state"] == ERROR
    assert by_key["order:2"]["status"] is None
    assert by_key["order:*:odd"]["scope"] == "billing"


@BOTH_TOPOLOGIES
def test_json_of_an_empty_list_is_an_empty_array(redis_client):
    assert json.loads(inspect("list", "--json")[0]) == []
    assert inspect("list")[0] == "No matching records.\n"


@BOTH_TOPOLOGIES
def test_show_prints_fingerprint_timestamps_status_headers_and_body(some):
    out, _ = inspect("show", "pay-1", "--scope", "anonymous")
    assert "kind:        http" in out
    assert "state:       done" in out
    assert "status:      201" in out
    assert "fingerprint: " in out and "(not compared)" not in out
    assert "created:     20" in out and "finished:    20" in out
    assert "Content-Type: application/json" in out
    assert '"body": "hello"' in out

    doc = json.loads(inspect("show", "pay-1", "--json")[0])[0]
    assert doc["status"] == 201
    assert [name for name, _ in doc["headers"]] == ["Content-Type", "X-Run"]
    assert json.loads(doc["body_preview"])["body"] == "hello"
    assert doc["created_at"].endswith("+00:00")
    assert doc.keys() >= COLUMNS


@BOTH_TOPOLOGIES
def test_show_finds_run_records_by_scope_then_kind(some):
    out, _ = inspect("show", "order:2", "--scope", "")
    assert "kind:        run" in out and "state:       error" in out
    assert "card declined" in out
    doc = json.loads(inspect("show", "order:*:odd", "--scope", "billing", "--json")[0])[0]
    assert json.loads(doc["body_preview"]) == [1, 2]
    with pytest.raises(CommandError):
        inspect("show", "order:*:odd", "--scope", "billing", "--kind", "http")


@BOTH_TOPOLOGIES
def test_show_of_a_running_record_names_its_owner_and_lease(redis_client):
    redis_key, data = sealed(RUNNING, HTTP, "user:7", "slow", created_ms=now_ms())
    redis_client.set(redis_key, data, px=60_000)
    out, _ = inspect("show", "slow")
    assert "owner:       0123456789abcdef01234567 (lease: " in out
    assert "payload" not in out and "body" not in out


@BOTH_TOPOLOGIES
def test_show_of_an_unknown_key_exits_1_with_a_message(redis_client):
    with pytest.raises(CommandError) as info:
        inspect("show", "nope", "--scope", "user:1")
    assert info.value.returncode == 1
    assert str(info.value) == "No idempotency record for key 'nope' in scope 'user:1'."


@BOTH_TOPOLOGIES
def test_binary_bodies_are_shown_as_hex_and_long_ones_are_cut(redis_client):
    created = now_ms()
    for key, body in (("bin", b"\x00\xff\x10binary"), ("long", b"x" * 5000)):
        redis_key, data = sealed(DONE, HTTP, "s", key, created_ms=created, body=body)
        redis_client.set(redis_key, data)
    out, _ = inspect("show", "bin")
    assert "<binary> 00 ff 10" in out
    out, _ = inspect("show", "long", "--body-bytes", "100")
    assert "... (4900 more bytes)" in out
    doc = json.loads(inspect("show", "long", "--json")[0])[0]
    assert doc["body_truncated"] is True and doc["body_bytes"] == 5000
    # No TTL: listed as such; size comes from STRLEN for records longer than the read.
    row = next(r for r in json.loads(inspect("list", "--json")[0]) if r["key"] == "long")
    assert row["ttl_seconds"] is None
    assert row["size_bytes"] == len(redis_client.get(row["redis_key"]))
    assert row["status"] == 201


@BOTH_TOPOLOGIES
def test_records_with_headers_longer_than_the_first_read_are_listed_whole(redis_client):
    key = "%" * 250  # percent-encoded to 750 bytes: the header outgrows GETRANGE 0 599
    redis_key, data = sealed(DONE, HTTP, "user:1", key, created_ms=now_ms())
    redis_client.set(redis_key, data)
    (row,) = json.loads(inspect("list", "--json")[0])
    assert row["key"] == key
    assert row["status"] == 201
    assert row["size_bytes"] == len(data)


@BOTH_TOPOLOGIES
def test_foreign_keys_under_the_prefix_are_counted_as_unreadable_and_skipped(redis_client):
    redis_client.hset("idem:{not-a-record}", "a", "b")
    redis_client.set("idem:{garbage}", b"hello world")
    run("fine", lambda: 1)
    assert [r["key"] for r in json.loads(inspect("list", "--json")[0])] == ["fine"]
    stats = json.loads(inspect("stats", "--json")[0])
    assert stats["total"] == 1 and stats["unreadable"] == 2


# -- filters -----------------------------------------------------------------------------


@pytest.fixture
def varied(redis_client) -> None:
    now = now_ms()
    rows = [
        (DONE, HTTP, "user:1", "order-1", now - 7_200_000),
        (DONE, HTTP, "user:2", "order-2", now - 60_000),
        (RUNNING, HTTP, "user:1", "order-3", now),
        (ERROR, RUN, "jobs", "order-1", now - 7_200_000),
        (DONE, RUN, "jobs", "refund:*", now),
    ]
    for state, door, scope, key, created in rows:
        redis_key, data = sealed(state, door, scope, key, created_ms=created)
        redis_client.set(redis_key, data, px=600_000)


def keys_listed(*args: str) -> list[tuple[str, str]]:
    rows = json.loads(inspect("list", "--json", *args)[0])
    return sorted((r["scope"], r["key"]) for r in rows)


@BOTH_TOPOLOGIES
def test_list_filters_by_state_scope_door_glob_and_age(varied):
    assert keys_listed("--state", "done") == [
        ("jobs", "refund:*"),
        ("user:1", "order-1"),
        ("user:2", "order-2"),
    ]
    assert keys_listed("--state", "running", "--state", "error") == [
        ("jobs", "order-1"),
        ("user:1", "order-3"),
    ]
    assert keys_listed("--scope", "user:1") == [("user:1", "order-1"), ("user:1", "order-3")]
    assert keys_listed("--kind", "run") == [("jobs", "order-1"), ("jobs", "refund:*")]
    assert keys_listed("--door", "run") == [("jobs", "order-1"), ("jobs", "refund:*")]
    assert keys_listed("--older-than", "1h") == [("jobs", "order-1"), ("user:1", "order-1")]
    # The glob runs on the decoded key in Python: '*' and ':' in keys are just characters.
    assert keys_listed("--key-glob", "order-[12]") == [
        ("jobs", "order-1"),
        ("user:1", "order-1"),
        ("user:2", "order-2"),
    ]
    assert keys_listed("--key-glob", "refund:[*]") == [("jobs", "refund:*")]
    assert keys_listed("--limit", "2", "--scope", "user:1") == keys_listed("--scope", "user:1")
    assert len(keys_listed("--limit", "1")) == 1


@BOTH_TOPOLOGIES
def test_bad_filter_values_are_argument_errors(redis_client):
    # The edge writes no records: a door no record can carry is refused too.
    refused = (
        ["--older-than", "soon"],
        ["--state", "sleeping"],
        ["--door", "edge"],
        ["--limit", "0"],
    )
    for args in refused:
        with pytest.raises(CommandError):
            inspect("list", *args)
    assert parse_duration("90") == 90
    assert parse_duration("1.5h") == 5400
    assert parse_duration("2d") == 172_800


@BOTH_TOPOLOGIES
def test_show_without_scope_finds_the_key_in_every_scope(varied):
    out, _ = inspect("show", "order-1")
    assert out.count("redis key:") == 2
    assert {d["scope"] for d in json.loads(inspect("show", "order-1", "--json")[0])} == {
        "user:1",
        "jobs",
    }


@BOTH_TOPOLOGIES
def test_stats_take_the_same_filters(varied):
    stats = json.loads(inspect("stats", "--json", "--scope", "user:1")[0])
    assert stats["total"] == 2
    assert stats["by_state"][DONE] == stats["by_state"][RUNNING] == 1
    out, _ = inspect("stats")
    assert "records: 5 (of 5 keys scanned)" in out
    assert "memory: about" in out


# -- purge -------------------------------------------------------------------------------


@BOTH_TOPOLOGIES
def test_purge_dry_run_counts_and_deletes_nothing(varied):
    out, err = inspect("purge", "--all", "--dry-run")
    assert "Would delete 4 record(s)." in out
    assert "Keeping 1 running record(s)" in err
    assert len(keys_listed()) == 5


@BOTH_TOPOLOGIES
def test_purge_by_key_keeps_a_running_record_without_force(varied):
    out, err = inspect("purge", "order-3", "--scope", "user:1", "--yes")
    assert "Deleted 0 record(s)." in out
    assert "Keeping 1 running record(s)" in err
    assert ("user:1", "order-3") in keys_listed()
    out, err = inspect("purge", "order-3", "--scope", "user:1", "--yes", "--force")
    assert "Deleted 1 record(s)." in out
    assert "a second time" in err
    assert ("user:1", "order-3") not in keys_listed()


@BOTH_TOPOLOGIES
def test_purge_by_key_without_scope_deletes_it_in_every_scope(varied):
    out, _ = inspect("purge", "order-1", "--yes")
    assert "Deleted 2 record(s)." in out
    assert sorted(k for _, k in keys_listed()) == ["order-2", "order-3", "refund:*"]


@BOTH_TOPOLOGIES
def test_purge_of_an_unknown_key_exits_1_after_purging_the_others(varied):
    with pytest.raises(CommandError) as info:
        inspect("purge", "order-2", "missing", "--yes")
    assert info.value.returncode == 1
    assert ("user:2", "order-2") not in keys_listed()


@BOTH_TOPOLOGIES
def test_purge_asks_for_confirmation(varied, monkeypatch):
    answers = iter(["no", "yes"])
    prompts: list[str] = []

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("builtins.input", answer)
    out, _ = inspect("purge", "--state", "done")
    assert "Purge cancelled." in out
    assert "This will delete 3 idempotency record(s)" in prompts[0]
    assert len(keys_listed()) == 5
    out, _ = inspect("purge", "--state", "done")
    assert "Deleted 3 record(s)." in out
    assert len(keys_listed()) == 2


@BOTH_TOPOLOGIES
def test_purge_needs_a_selection_and_force_for_running_state(varied):
    for args, message in (
        ([], "Say what to purge"),
        (["--all", "--state", "done"], "--all cannot be combined"),
        (["order-1", "--all"], "not several"),
        (["order-1", "--state", "done"], "not several"),
        (["--state", "running", "--yes"], "needs --force"),
    ):
        with pytest.raises(CommandError, match=message):
            inspect("purge", *args)
    assert len(keys_listed()) == 5


@BOTH_TOPOLOGIES
def test_purge_never_deletes_a_record_that_turned_running_after_the_scan(redis_client):
    inventory = Inventory(get_engine())
    redis_key, done = sealed(DONE, HTTP, "u", "k", created_ms=now_ms())
    redis_client.set(redis_key, done)
    (entry,) = inventory.scan()
    # Meanwhile the record expires and a new request claims the key.
    _, running = sealed(RUNNING, HTTP, "u", "k", created_ms=now_ms())
    redis_client.set(redis_key, running, px=60_000)
    result = inventory.purge([entry])
    assert (result.deleted, result.changed) == (0, 1)
    assert redis_client.get(redis_key) == running


@BOTH_TOPOLOGIES
def test_purge_counts_a_key_that_scan_returned_twice_once(varied):
    # SCAN repeats keys while Redis shrinks its table under a mass delete.
    inventory = Inventory(get_engine())
    entries = list(inventory.scan())
    result = inventory.purge(entries + entries)
    assert (result.deleted, result.skipped_running, result.changed) == (4, 1, 0)


def test_purge_rereads_a_batch_whose_watch_fired(redis_client):
    """A write between our read and EXEC aborts the transaction; the retry sees it."""
    scanner = get_engine().store.scanner()
    keys = []
    for i in range(4):
        redis_key, data = sealed(DONE, RUN, "", f"k{i}", created_ms=now_ms())
        redis_client.set(redis_key, data)
        keys.append(redis_key)
    _, running = sealed(RUNNING, RUN, "", "k0", created_ms=now_ms())
    calls = Counter[str]()

    def wanted(name: str, head: bytes) -> bool:
        calls[name] += 1
        if calls[keys[0]] == 1 and name == keys[0]:
            redis_client.set(keys[0], running)  # another client, inside our WATCH
        return bool(peek(head).state != RUNNING)

    deleted, changed = scanner.delete_checked(redis_client, keys, wanted, lambda head: True)
    assert (deleted, changed) == (3, 1)
    assert redis_client.get(keys[0]) == running
    assert calls[keys[0]] >= 2  # read again after the abort


# -- failures and the terminal -----------------------------------------------------------


def test_progress_goes_to_a_terminal_stderr_only(varied, monkeypatch):
    monkeypatch.setattr(Command, "progress_after", 0.0)
    tty = FakeTTY()
    call_command("idempotency_inspect", "stats", stdout=io.StringIO(), stderr=tty)
    assert "scanned 5 keys, 5 matching" in tty.getvalue()
    assert tty.getvalue().endswith("\r\033[K")
    plain = io.StringIO()
    call_command("idempotency_inspect", "stats", stdout=io.StringIO(), stderr=plain)
    assert plain.getvalue() == ""


@BOTH_TOPOLOGIES
def test_redis_unreachable_is_a_command_error_with_exit_code_3(settings):
    settings.IDEMPOTENCY = {"REDIS": "redis://127.0.0.1:1/0"}
    for args in (["list"], ["stats"], ["show", "k", "--scope", "s"], ["purge", "--all"]):
        with pytest.raises(CommandError) as info:
            inspect(*args)
        assert info.value.returncode == 3
        assert str(info.value).startswith("Redis is unreachable or failed: ")
        assert "\n" not in str(info.value)


def _manage_py(
    tmp_path: Path, redis_url: str, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` in a subprocess, with Django's default logging, as a user's
    project has it (the suite's settings send the package's log to a null handler)."""
    settings_dir = tmp_path / "user_settings"
    settings_dir.mkdir(exist_ok=True)
    (settings_dir / "user_logging_settings.py").write_text(
        "from tests.support.settings import *  # noqa: F403\ndel LOGGING\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "user_logging_settings",
        "REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(settings_dir)]),
        "TEST_DB_PATH": str(tmp_path / "db.sqlite3"),
        **extra,
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.no_redis
@pytest.mark.parametrize("subcommand", ["list", "stats"])
def test_manage_py_prints_one_line_and_no_traceback_when_redis_is_down(tmp_path, subcommand):
    proc = _manage_py(tmp_path, "redis://127.0.0.1:1/0", "idempotency_inspect", subcommand)
    assert proc.returncode == 3
    assert proc.stdout == ""
    # Nothing of the package's own (a notifier's reconnect warning) beside the error.
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("CommandError: Redis is unreachable or failed: ")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [["check"], ["migrate", "--noinput"], ["idempotency_inspect", "stats"]],
    ids=["check", "migrate", "inspect"],
)
def test_management_commands_open_no_subscription(tmp_path, redis_url, redis_client, args):
    redis_client.config_resetstat()
    proc = _manage_py(tmp_path, redis_url, *args)
    assert proc.returncode == 0, proc.stderr
    # Redis counts every SUBSCRIBE it was sent, also on a connection closed since (CLIENT
    # LIST, sampled after the command exits, could no longer show it).
    subscribes = redis_client.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)
    assert subscribes == 0


# -- Redis Cluster -----------------------------------------------------------------------


@pytest.mark.slow
def test_list_stats_and_purge_cover_every_primary_of_a_cluster(redis_cluster, settings):
    cluster = redis_cluster
    client = cluster.client()
    client.flushall(target_nodes=client.PRIMARIES)
    settings.IDEMPOTENCY = {"REDIS": cluster.client}
    states = write_records(client, get_engine().sealer, 3000)  # a cluster pipeline splits by slot
    per_node = [sum(1 for _ in n.client().scan_iter("idem:{*}")) for n in cluster.primaries]
    assert all(per_node) and sum(per_node) == 3000

    assert len(json.loads(inspect("list", "--json")[0])) == 3000
    stats = json.loads(inspect("stats", "--json")[0])
    assert stats["by_state"] == {state: states[state] for state in STATES}
    out, _ = inspect("purge", "--state", "done", "--yes")
    assert out == f"Deleted {states[DONE]:,} record(s).\n"
    out, err = inspect("purge", "--all", "--yes")
    assert "Keeping 3 running record(s)" in err
    assert states_left(*(n.client() for n in cluster.primaries)) == {RUNNING: states[RUNNING]}
    one = json.loads(inspect("list", "--json", "--limit", "1")[0])[0]
    assert inspect("show", one["key"], "--scope", one["scope"])[0].count("redis key:") == 1
    client.close()


@pytest.mark.no_redis
def test_filters_refuse_unknown_states_and_kinds():
    with pytest.raises(ValueError):
        Filters(states=frozenset({"sleeping"}))
    with pytest.raises(ValueError):
        Filters(kind="x")
