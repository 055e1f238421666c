"""Processes made without Python's at-fork hooks, and owners that die.

uWSGI loads the app in its master and forks the workers from C: the hooks registered
with ``os.register_at_fork`` never run there. ``libc.fork()`` called through ctypes does
the same here (``PyDLL`` keeps the GIL held across the call, as uWSGI's master does), so
each piece of per-process state must notice the new process by itself.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from django_idempotency import run
from django_idempotency.engine import _new_token
from django_idempotency.runtime import get_engine

from .support import workers
from .support.servers import eventually

pytestmark = [pytest.mark.matrix, pytest.mark.core]

_libc_fork = ctypes.PyDLL(None).fork
_libc_fork.restype = ctypes.c_int


def fork_without_hooks(child: Callable[[], int]) -> int:
    """Run ``child()`` in a process forked behind Python's back; return the child's pid."""
    pid = int(_libc_fork())
    if pid == 0:
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    assert pid > 0, "fork failed"
    return pid


def exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_fork_the_hooks_did_not_see_still_draws_its_own_fencing_tokens():
    parent = [_new_token() for _ in range(3)]
    read, write = os.pipe()

    def child() -> int:
        os.write(write, b"".join(_new_token() for _ in range(3)))
        return 0

    pid = fork_without_hooks(child)
    os.close(write)
    drawn = b""
    while len(drawn) < 36:
        chunk = os.read(read, 36)
        assert chunk, "the child wrote nothing"
        drawn += chunk
    os.close(read)
    assert exit_code(pid) == 0
    parent += [_new_token() for _ in range(3)]
    children = [drawn[i : i + 12] for i in range(0, 36, 12)]
    assert not set(children) & set(parent)
    # Unique by construction: the token names the process that drew it.
    assert {t[:4] for t in children} == {pid.to_bytes(4, "big")}
    assert {t[:4] for t in parent} == {os.getpid().to_bytes(4, "big")}


def test_workers_forked_without_hooks_run_a_duplicate_once(redis_client: redis.Redis):
    key, counter = f"fork-{uuid.uuid4()}", f"executions-{uuid.uuid4()}"
    # The master used the engine before forking, as a preloaded app may: its lease
    # keeper thread, flights, notifier and kept connections are all copied.
    assert run(f"warm-{uuid.uuid4()}", lambda: "warm", wait_timeout=5) == "warm"
    engine = get_engine()
    go_read, go_write = os.pipe()

    def worker() -> int:
        os.close(go_write)
        assert os.read(go_read, 1) == b"g"  # both children start at once
        assert get_engine() is engine  # the master's engine, as under uWSGI

        def action() -> dict[str, Any]:
            n = redis_client.incr(counter)
            time.sleep(1)
            return {"pid": os.getpid(), "n": n}

        result = run(key, action, lock_ttl=5, wait_timeout=10)
        redis_client.rpush(f"{counter}:results", repr(sorted(result.items())))
        return 0

    pids = [fork_without_hooks(worker) for _ in range(2)]
    os.close(go_read)
    os.write(go_write, b"gg")
    os.close(go_write)
    assert [exit_code(pid) for pid in pids] == [0, 0]
    assert int(redis_client.get(counter) or 0) == 1
    results = redis_client.lrange(f"{counter}:results", 0, -1)
    assert len(results) == 2 and results[0] == results[1]


#: How much later than the dead owner's lease end a waiter may take over: the record's
#: expiry, one claim and the spawned process's scheduling on a loaded 2-core machine.
TAKEOVER_MARGIN = 1.5


def test_a_waiter_in_a_fresh_process_takes_over_when_the_dead_owners_lease_ends(
    redis_url: str, redis_client: redis.Redis
):
    lock_ttl, wait_timeout = 3.0, 20.0
    ctx = multiprocessing.get_context("spawn")
    owner = ctx.Process(
        target=workers.run_forever, args=(redis_url, "crashed", "started", lock_ttl)
    )
    owner.start()
    eventually(lambda: redis_client.get("started"), 30, "the owner's action")
    # A process that has never claimed or waited (its engine is built by its first call).
    waiter = ctx.Process(
        target=workers.run_after_go,
        args=(redis_url, "crashed", "go", "took-over", lock_ttl, wait_timeout),
    )
    waiter.start()
    eventually(lambda: redis_client.get("go") == b"ready", 30, "the waiter's setup")
    assert owner.pid is not None
    os.kill(owner.pid, signal.SIGKILL)
    killed = time.time()
    owner.join()
    redis_client.set("go", "go")
    waiter.join(wait_timeout + 10)
    assert waiter.exitcode == 0
    took_over = float(redis_client.get("took-over") or 0)
    # It waited for the lease (renewed at most a third of it before the kill) rather
    # than claiming at once, and took over when it ended, not at the wait timeout.
    assert killed + lock_ttl * 2 / 3 - 0.2 <= took_over <= killed + lock_ttl + TAKEOVER_MARGIN
