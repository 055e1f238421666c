"""The Celery door on every worker pool: prefork, threads, solo and gevent.

For each pool the module starts real worker processes (``celery worker``) on a private
redis-server (broker, result backend and idempotency records) and proves three promises
of :class:`~django_idempotency.celery.IdempotentTask`:

(a) 40 messages for one job, enqueued at once, run its body once; all 40 return the
    same value.
(b) A job running longer than its lease (``lock_ttl``) keeps its claim: a duplicate
    delivered to another process after the lease would have run out waits for it and
    returns its value instead of running the body.
(c) A worker SIGKILLed mid-job (``acks_late``, ``task_reject_on_worker_lost``): the
    message comes back, the body runs a second time, once, and the second run starts
    when the dead owner's lease ends, not when the waiter's ``wait_timeout`` would.

Two worker processes per pool, each also listening on a queue of its own, so that a
duplicate can be sent to the process that is *not* running the job: within one process
duplicates follow the first through the process's own flights and never look at the
lease in Redis. Everything the jobs do is written to Redis (db 3) and counted with
``INCR`` (:mod:`tests.support.deploy_tasks`), so every process's work is seen; the test
orders itself by polling that state, never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from django_idempotency.testing import RedisServer

from .support import deploy_tasks
from .support.deploy_tasks import KILL_LOCK_TTL, KILL_WAIT_TIMEOUT, SHORT_LOCK_TTL
from .support.servers import eventually

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.no_redis, pytest.mark.core]

#: The pools, with the options a deployment would start them with.
POOLS: dict[str, list[str]] = {
    "prefork": ["--pool=prefork", "--concurrency=2"],
    "threads": ["--pool=threads", "--concurrency=8"],
    "solo": ["--pool=solo"],
    "gevent": ["--pool=gevent", "--concurrency=20"],
}

#: How late after the kill, beyond the dead owner's lease (KILL_LOCK_TTL), the second run
#: may start: the waiter wakes when the lease ends (its wait is cut to the lease left), then
#: claims the key and starts the body, on a 2-core machine that may be busy with other
#: processes. Well below the wait timeout: a waiter that waited for the dead owner until
#: its KILL_WAIT_TIMEOUT ran out (the behaviour this proves gone) would start 30 s or more
#: after the kill.
TAKEOVER_MARGIN = 3.0
assert KILL_LOCK_TTL + TAKEOVER_MARGIN < KILL_WAIT_TIMEOUT

#: The visibility timeout of the fresh worker that picks up the message of a worker
#: killed as a whole: its message is handed out again once it is this old (seconds).
RESTORE_AFTER = 1

#: The BRPOP timeout of a fresh gevent worker: longer than the 2 s its loop (no event loop
#: under gevent) polls for, so that some polls end idle and it sweeps (kombu#1025).
GEVENT_POLLING_INTERVAL = 2.5

#: Bound of every wait for a worker or a result (seconds).
TIMEOUT = 60

#: How long the workers get to stop before they are killed (seconds).
STOP_GRACE = 15


@dataclass
class Worker:
    """One ``celery worker`` process."""

    pool: str
    name: str
    queue: str  # its own queue (it also listens on its pool's shared queue, if any)
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


@dataclass
class Workers:
    """Starts workers and stops every one it started (with any prefork child left)."""

    redis_url: str
    logs: Path
    started: list[Worker] = field(default_factory=list)

    def start(
        self,
        pool: str,
        queues: list[str],
        visibility_timeout: float | None = None,
        polling_interval: float | None = None,
    ) -> Worker:
        """A worker of ``pool`` on ``queues`` (the first is its own), not yet answering."""
        name = f"{pool}-{uuid.uuid4().hex[:8]}@deploy"
        log = self.logs / f"{name}.log"
        env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="tests.support.settings",
            REDIS_URL=self.redis_url,
            PYTHONPATH=str(ROOT),
        )
        if visibility_timeout is not None:
            env["DEPLOY_VISIBILITY_TIMEOUT"] = str(visibility_timeout)
        if polling_interval is not None:
            env["DEPLOY_POLLING_INTERVAL"] = str(polling_interval)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.support.deploy_tasks",
                    "worker",
                    *POOLS[pool],
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-Q",
                    ",".join(queues),
                    "-n",
                    name,
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(pool, name, queues[0], proc, log)
        self.started.append(worker)
        return worker

    def ready(self, worker: Worker) -> Worker:
        """``worker``, once it answers a ping (so it consumes its queues)."""
        eventually(
            lambda: (
                worker.proc.poll() is not None
                or deploy_tasks.app.control.ping(destination=[worker.name], timeout=0.5)
            ),
            timeout=TIMEOUT,
            what=f"the {worker.pool} worker {worker.name} to answer a ping",
        )
        assert worker.proc.poll() is None, worker.tail()
        return worker

    def stop_all(self) -> None:
        """Stop every worker started (all at once: a gevent worker takes seconds)."""
        live = [worker for worker in self.started if worker.proc.poll() is None]
        forked = [pid for worker in live for pid in children(worker.proc.pid)]
        for worker in live:
            worker.proc.terminate()  # warm shutdown: no job is left running by now
        deadline = time.monotonic() + STOP_GRACE
        for worker in self.started:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        # A prefork child still in a job (a failed test) outlives a parent killed after
        # the grace; only those, still running this module's worker, are killed.
        for pid in forked:
            with contextlib.suppress(OSError):
                if b"tests.support.deploy_tasks" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


@dataclass
class Deployment:
    """The workers of one pool: two processes on a shared queue, each on its own too."""

    pool: str
    queue: str
    workers: list[Worker]
    manager: Workers


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (Linux ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(text.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def deploy_redis() -> Iterator[str]:
    """One private redis-server for the module; the pools keep to queues of their own."""
    with RedisServer() as server:
        deploy_tasks.configure(server.url)
        yield server.url


@pytest.fixture(scope="module", params=list(POOLS))
def deployment(
    request: pytest.FixtureRequest, deploy_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    pool: str = request.param
    manager = Workers(deploy_redis, tmp_path_factory.mktemp(f"celery-{pool}"))
    shared = f"deploy-{pool}-{uuid.uuid4().hex[:8]}"
    try:
        # Both start at once (they take a second or two each), then both must answer.
        started = [manager.start(pool, [f"{shared}-{i}", shared]) for i in (1, 2)]
        workers = [manager.ready(worker) for worker in started]
        yield Deployment(pool, shared, workers, manager)
    finally:
        manager.stop_all()


def notes(what: str, label: str) -> list[tuple[float, int]]:
    """``(time, pid)`` of every delivery / start / end of ``label``'s job, in order."""
    raw = deploy_tasks.side_effects().lrange(f"deploy:{what}:{label}", 0, -1)
    texts = [item.decode() if isinstance(item, bytes) else item for item in raw]
    return [(float(t), int(p)) for t, p in (text.split() for text in texts)]


def runs(label: str) -> int:
    """How many times the body of ``label``'s job ran, in every process (``INCR``)."""
    return int(deploy_tasks.side_effects().get(f"deploy:runs:{label}") or 0)


def report(deployment: Deployment, promise: str, text: str) -> None:
    print(f"\n[{deployment.pool}] {promise}: {text}")


def test_40_duplicates_at_once_run_the_body_once(deployment: Deployment) -> None:
    label = uuid.uuid4().hex
    # One second of work: the duplicates arrive while it runs (in the other threads,
    # greenlets, children and process) as well as after it finished.
    results = [
        deploy_tasks.once.apply_async((label, 1.0), queue=deployment.queue) for _ in range(40)
    ]
    values = [result.get(timeout=TIMEOUT) for result in results]
    assert len({result.id for result in results}) == 40
    assert runs(label) == 1
    assert values == [values[0]] * 40
    assert values[0]["run"] == 1
    delivered = notes("deliveries", label)
    assert len(delivered) == 40  # every message reached a task, none was dropped
    report(
        deployment,
        "a",
        f"40 deliveries in {len({pid for _, pid in delivered})} processes, 1 run",
    )


def test_a_job_outliving_its_lease_keeps_its_claim(deployment: Deployment) -> None:
    label = uuid.uuid4().hex
    first_worker, other_worker = deployment.workers
    first = deploy_tasks.outlives_lease.apply_async((label,), queue=first_worker.queue)
    ((first_start, owner_pid),) = eventually(
        lambda: notes("starts", label), timeout=TIMEOUT, what="the first run"
    )
    # Past the lease it was given: only renewing it keeps the key from the duplicate.
    eventually(
        lambda: time.time() > first_start + SHORT_LOCK_TTL + 1,
        timeout=SHORT_LOCK_TTL + 2,
        what="the first run to outlive its lease",
    )
    second = deploy_tasks.outlives_lease.apply_async((label,), queue=other_worker.queue)
    value = first.get(timeout=TIMEOUT)
    assert second.get(timeout=TIMEOUT) == value
    assert value["run"] == 1
    assert runs(label) == 1
    # The duplicate reached the other process after the lease's first term and before
    # the first run ended: it found the claim alive (renewed), not a stored result.
    (_, (second_delivered, second_pid)) = notes("deliveries", label)
    ((first_end, _),) = notes("ends", label)
    assert second_pid != owner_pid
    assert first_start + SHORT_LOCK_TTL < second_delivered < first_end
    report(
        deployment,
        "b",
        f"duplicate delivered {second_delivered - first_start:.2f} s after the start "
        f"(lease {SHORT_LOCK_TTL} s, run {first_end - first_start:.2f} s), 1 run",
    )


def test_a_killed_worker_runs_the_job_again_when_its_lease_ends(
    deployment: Deployment,
) -> None:
    label = uuid.uuid4().hex
    manager = deployment.manager
    if deployment.pool == "prefork":
        # The parent survives its child: it gives the message back (reject_on_worker_lost)
        # and a child of its own (the other one or a new one) gets it again.
        victim = deployment.workers[0]
        queue = victim.queue
    else:
        # The job runs in the worker process itself: kill that, and let a fresh process
        # (which has never waited for anything) pick the message up. A worker of its own,
        # on a queue of its own, so that the pool's workers stay up for the other tests.
        queue = f"deploy-{deployment.pool}-kill-{uuid.uuid4().hex[:8]}"
        victim = manager.ready(manager.start(deployment.pool, [queue]))
    result = deploy_tasks.killed_once.apply_async((label,), queue=queue)
    ((first_start, owner_pid),) = eventually(
        lambda: notes("starts", label), timeout=TIMEOUT, what="the first run"
    )
    if deployment.pool == "prefork":
        assert owner_pid in children(victim.proc.pid)
    else:
        assert owner_pid == victim.proc.pid
    killed_at = time.time()
    os.kill(owner_pid, signal.SIGKILL)
    if deployment.pool != "prefork":
        victim.proc.wait(TIMEOUT)
        # No parent is left to give the message back: it stays delivered-but-unacked in
        # the broker until a worker's sweep finds it older than its visibility timeout.
        manager.start(
            deployment.pool,
            [queue],
            visibility_timeout=RESTORE_AFTER,
            polling_interval=GEVENT_POLLING_INTERVAL if deployment.pool == "gevent" else None,
        )
    value = result.get(timeout=TIMEOUT)
    assert value["run"] == 2
    assert runs(label) == 2
    started = notes("starts", label)
    assert len(started) == 2, started
    second_start, second_pid = started[1]
    assert second_pid != owner_pid
    assert value["pid"] == second_pid
    if deployment.pool != "prefork":
        fresh = manager.started[-1]
        assert second_pid == fresh.proc.pid  # the fresh process, not a survivor
    # The redelivery reached a worker while the dead owner's lease still held the key
    # (else nothing had to wait, and the timing below would prove nothing).
    redelivered_at = notes("deliveries", label)[1][0]
    assert redelivered_at + 0.5 < first_start + KILL_LOCK_TTL, (
        f"redelivered {redelivered_at - killed_at:.2f} s after the kill: too late to wait"
    )
    # Never beside the owner: not before the lease it took with its claim could end.
    assert second_start > killed_at
    assert second_start >= first_start + KILL_LOCK_TTL - 0.1
    # But as soon as the lease ended, not after the waiter's wait timeout.
    takeover = second_start - killed_at
    assert takeover <= KILL_LOCK_TTL + TAKEOVER_MARGIN, takeover
    report(
        deployment,
        "c",
        f"redelivered {redelivered_at - killed_at:.2f} s after the kill, second run "
        f"{takeover:.2f} s after it (lease {KILL_LOCK_TTL} s, bound "
        f"{KILL_LOCK_TTL + TAKEOVER_MARGIN:g} s, wait timeout {KILL_WAIT_TIMEOUT} s)",
    )
