"""Enqueue to, and read from, the django-tasks-db backend in a process of its own.

The test process runs the suite's settings (an in-memory test database, no task
backend); this module runs with :mod:`tests.support.tasks_db_settings`, on the SQLite
file the worker uses, and prints one JSON line::

    python -m tests.support.tasks_db_client enqueue record '["label"]'
    python -m tests.support.tasks_db_client wait <result id> <attempts> <timeout>
    python -m tests.support.tasks_db_client requeue <result id>
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import django


def enqueue(name: str, args: str) -> dict[str, Any]:
    """Enqueue ``db_tasks.<name>(*args)`` through the default (database) backend."""
    from . import db_tasks

    result = getattr(db_tasks, name).enqueue(*json.loads(args))
    return {"id": result.id, "backend": type(result.task.get_backend()).__name__}


def wait(result_id: str, attempts: str, timeout: str) -> dict[str, Any]:
    """The result once it has finished after ``attempts`` worker claims (or gave up)."""
    from django.tasks import default_task_backend

    deadline = time.monotonic() + float(timeout)
    while True:
        result = default_task_backend.get_result(result_id)
        finished = result.is_finished and len(result.worker_ids) >= int(attempts)
        if finished or time.monotonic() >= deadline:
            return {
                "status": str(result.status),
                "return_value": result.return_value if result.status == "SUCCESSFUL" else None,
                "worker_ids": list(result.worker_ids),
                "errors": [error.traceback for error in result.errors],
            }
        time.sleep(0.05)


def requeue(result_id: str) -> dict[str, Any]:
    """Put a result back in the queue, as ready and never finished.

    django-tasks-db never runs a claimed result again by itself: a worker that dies after
    the body returned, before it saved the outcome, leaves the row RUNNING, and whoever
    recovers it (an operator, a reaper) sets it back to READY. This is that reset.
    """
    from django.utils.module_loading import import_string

    # By path: the type checker runs where django-tasks-db may not be installed.
    model = import_string("django_tasks_db.models.DBTaskResult")
    updated = model.objects.filter(pk=result_id).update(
        status="READY", return_value=None, finished_at=None
    )
    return {"updated": updated}


COMMANDS: dict[str, Callable[..., dict[str, Any]]] = {
    "enqueue": enqueue,
    "wait": wait,
    "requeue": requeue,
}


def main(argv: list[str]) -> None:
    """Run one command and print its answer as JSON."""
    django.setup()
    command, *args = argv
    print(json.dumps(COMMANDS[command](*args)))


if __name__ == "__main__":
    main(sys.argv[1:])
