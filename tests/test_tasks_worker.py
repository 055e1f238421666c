"""The Django Tasks door against a real worker: django-tasks-db's ``db_worker`` in a
process of its own, on a SQLite file shared with the processes that enqueue, with the
idempotency records (db 0) and the tasks' side effects (db 3) on a redis-server this
module starts and stops.

The test process enqueues and reads results through :mod:`tests.support.tasks_db_client`
subprocesses: its own settings have no task backend and an in-memory database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django
import pytest
import redis

from django_idempotency.testing import RedisServer

from .support import servers

if django.VERSION < (6, 0):
    pytest.skip("django.tasks (and so django-tasks-db) needs Django 6.0+", allow_module_level=True)
pytest.importorskip("django_tasks_db", reason="django-tasks-db is not installed")

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.no_redis, pytest.mark.matrix]


@dataclass(frozen=True)
class Worker:
    """A running ``db_worker`` and what the test needs to talk to it."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    redis_url: str
    log: Path

    def client(self, *args: str, timeout: float = 120) -> Any:
        """Run one :mod:`tests.support.tasks_db_client` command; return its JSON answer."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.tasks_db_client", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def enqueue(self, name: str, *args: Any) -> str:
        """Enqueue ``db_tasks.<name>(*args)`` through the database backend; its result id."""
        answer = self.client("enqueue", name, json.dumps(args))
        assert answer["backend"] == "DatabaseBackend"
        return str(answer["id"])

    def wait(self, result_id: str, attempts: int = 1) -> dict[str, Any]:
        """The result once the worker has finished it after ``attempts`` claims."""
        answer: dict[str, Any] = self.client("wait", result_id, str(attempts), "60")
        assert self.process.poll() is None, self.log.read_text()
        assert len(answer["worker_ids"]) == attempts, (answer, self.log.read_text())
        assert answer["status"] == "SUCCESSFUL", answer
        return answer

    def counts(self, label: str) -> tuple[int, int]:
        """(deliveries, runs) of ``label``'s tasks so far, as the worker counted them."""
        client = redis.Redis.from_url(f"{self.redis_url.rsplit('/', 1)[0]}/3")
        try:
            deliveries, runs = client.mget(f"deliveries:{label}", f"runs:{label}")
        finally:
            client.close()
        return int(deliveries or 0), int(runs or 0)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    directory = tmp_path_factory.mktemp("tasks-db")
    log = directory / "worker.log"
    with RedisServer() as server:
        env = servers.server_env(
            server.url,
            directory / "tasks.sqlite3",
            DJANGO_SETTINGS_MODULE="tests.support.tasks_db_settings",
        )
        # The worker and the clients write the same file: WAL lets the worker's polling
        # read while a client enqueues.
        servers.migrate(env)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "db_worker",
                    "--no-startup-delay",
                    "--no-reload",
                    "--interval",
                    "0.1",
                    "--worker-id",
                    f"suite-{uuid.uuid4().hex[:8]}",
                    "-v",
                    "2",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            yield Worker(process, env, server.url, log)
        finally:
            servers.stop(process, 30)


def test_a_task_enqueued_to_the_database_runs_once_in_the_worker(worker):
    label = uuid.uuid4().hex
    result = worker.wait(worker.enqueue("record", label))
    # Run by the worker process, not here, and only once.
    assert result["return_value"] == {"label": label, "run": 1, "pid": worker.process.pid}
    assert worker.counts(label) == (1, 1)


def test_the_same_result_run_again_replays_the_first_value(worker):
    label = uuid.uuid4().hex
    result_id = worker.enqueue("record", label)
    first = worker.wait(result_id)
    assert worker.client("requeue", result_id) == {"updated": 1}
    # The worker claims the same result a second time (two entries in worker_ids) and
    # hands the body's first value back without running it.
    second = worker.wait(result_id, attempts=2)
    assert first["return_value"] == {"label": label, "run": 1, "pid": worker.process.pid}
    assert second["return_value"] == first["return_value"]
    assert worker.counts(label) == (2, 1)
    # The key is the result id: another result for the same arguments is another job.
    other = worker.wait(worker.enqueue("record", label))
    assert other["return_value"] == {"label": label, "run": 2, "pid": worker.process.pid}
    assert worker.counts(label) == (3, 2)


def test_two_results_with_one_business_key_run_once(worker):
    label, order = uuid.uuid4().hex, uuid.uuid4().int % 10**9
    ids = [worker.enqueue("charge", label, order) for _ in range(2)]
    assert ids[0] != ids[1]
    values = [worker.wait(result_id)["return_value"] for result_id in ids]
    assert values == [{"order": order, "run": 1, "pid": worker.process.pid}] * 2
    assert worker.counts(label) == (2, 1)
