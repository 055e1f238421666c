"""The Celery door against a real worker: prefork, two processes, Redis as broker and
result backend, on a redis-server this module starts (and the idempotency records in
the same server), stopped when the module ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery

from django_idempotency import InvalidOption
from django_idempotency.celery import IdempotentTask
from django_idempotency.testing import RedisServer

from .support import celery_app, jobs, servers
from .support.servers import eventually

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.no_redis, pytest.mark.matrix]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    with RedisServer() as server:
        celery_app.configure(server.url)
        env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="tests.support.settings",
            REDIS_URL=server.url,
            PYTHONPATH=str(ROOT),
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.support.celery_app",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=2",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"suite-{uuid.uuid4().hex[:8]}@%h",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            eventually(
                lambda: proc.poll() is not None or celery_app.app.control.ping(timeout=0.5),
                what="the Celery worker to answer a ping",
            )
            assert proc.poll() is None, log.read_text()
            yield proc
        finally:
            servers.stop(proc, 30)


def counts(label: str) -> tuple[int, int]:
    """(deliveries, runs) of ``label``'s jobs so far."""
    client = jobs.side_effects()
    return int(client.get(f"deliveries:{label}") or 0), int(client.get(f"runs:{label}") or 0)


def starts(label: str) -> list[tuple[float, int]]:
    """(time, pid) of every run's start, in order."""
    raw = jobs.side_effects().lrange(f"starts:{label}", 0, -1)
    texts = [item.decode() if isinstance(item, bytes) else item for item in raw]
    return [(float(t), int(p)) for t, p in (text.split() for text in texts)]


def test_the_same_task_id_published_twice_runs_once(worker):
    label, task_id = uuid.uuid4().hex, str(uuid.uuid4())
    # Both messages are in the queue at once and the worker has two processes: the second
    # delivery arrives while the first still runs, waits for it, and returns its value.
    first = jobs.record.apply_async((label, 1.0), task_id=task_id)
    second = jobs.record.apply_async((label, 1.0), task_id=task_id)
    eventually(lambda: counts(label)[0] == 2, what="both deliveries")
    value = first.get(timeout=60)
    assert second.get(timeout=60) == value
    assert value["run"] == 1
    eventually(lambda: jobs.side_effects().exists(f"deliveries:{label}"))
    assert counts(label) == (2, 1)


def test_two_task_ids_with_one_business_key_run_once(worker):
    label, order = uuid.uuid4().hex, int(time.time() * 1000)
    results = [jobs.charge.apply_async((label, order)) for _ in range(4)]
    values = [result.get(timeout=60) for result in results]
    assert len({result.id for result in results}) == 4
    assert values == [values[0]] * 4
    assert values[0]["run"] == 1
    assert counts(label) == (4, 1)


def test_a_task_that_raises_is_replayed_as_the_same_error(worker):
    label, order = uuid.uuid4().hex, int(time.time() * 1000) + 1
    first = jobs.refuse.apply_async((label, order))
    with pytest.raises(ValueError) as raised:
        first.get(timeout=60)
    second = jobs.refuse.apply_async((label, order))
    with pytest.raises(ValueError) as replayed:
        second.get(timeout=60)
    assert str(replayed.value) == str(raised.value) == f"card declined for order {order} (run 1)"
    assert counts(label) == (2, 1)


def test_retry_releases_the_key_so_the_body_runs_again(worker):
    label = uuid.uuid4().hex
    result = jobs.flaky.apply_async((label,))
    # The first run asked for a retry; the retried message (same task id) ran the body.
    assert result.get(timeout=60) == 2
    assert counts(label) == (2, 2)
    # Now the outcome is stored: another delivery of the same id replays it.
    again = jobs.flaky.apply_async((label,), task_id=result.id)
    eventually(lambda: counts(label)[0] == 3, what="the third delivery")
    assert again.get(timeout=60) == 2
    assert counts(label)[1] == 2


def test_a_killed_worker_process_runs_the_job_again_only_after_its_lease_ended(worker):
    label = uuid.uuid4().hex
    result = jobs.long_first_run.apply_async((label,))
    (first_start, owner_pid), *_ = eventually(lambda: starts(label), what="the first run")
    killed_at = time.time()
    os.kill(owner_pid, signal.SIGKILL)
    # acks_late + reject_on_worker_lost: the message comes back and is delivered again,
    # while the dead owner's claim still holds the key. The redelivery waits (and is
    # retried after each wait_timeout) until the claim's lease (lock_ttl 3 s) runs out.
    assert result.get(timeout=60) == 2
    runs = starts(label)
    assert len(runs) == 2, runs
    second_start, second_pid = runs[1]
    assert second_pid != owner_pid
    assert second_start > killed_at  # never beside a live owner
    assert second_start >= first_start + 3  # not before the lease could have ended
    assert counts(label)[1] == 2


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ({"idempotency_ttl": -1}, "BadTask.idempotency_ttl"),
        ({"idempotency_lock_ttl": "soon"}, "BadTask.idempotency_lock_ttl"),
        ({"idempotency_conflict": "bogus"}, "BadTask.idempotency_conflict"),
        ({"idempotency_tll": 60}, "BadTask.idempotency_tll"),
        ({"idempotency_key": "order"}, "BadTask.idempotency_key"),
        ({"idempotency_methods": ["POST"]}, "BadTask.idempotency_methods"),
    ],
)
def test_bad_options_are_refused_when_the_task_class_is_made(attributes, named):
    with pytest.raises(InvalidOption, match=named.replace(".", r"\.")):
        type("BadTask", (IdempotentTask,), attributes)


def test_app_task_options_are_validated_before_any_job_runs():
    app = Celery("definitions", set_as_current=False)

    @app.task(base=IdempotentTask, idempotency_ttl=timedelta(hours=1), shared=False)
    def fine() -> None: ...

    @app.task(base=IdempotentTask, idempotency_wait_timeout=-5, shared=False)
    def broken() -> None: ...

    # Celery makes the task classes when the app finalizes (a worker does so at start).
    with pytest.raises(InvalidOption, match=r"broken\.idempotency_wait_timeout"):
        app.finalize()
