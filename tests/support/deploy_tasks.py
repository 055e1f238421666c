"""The Celery app and jobs of the worker-pool deployment matrix (tests/test_deploy_celery.py).

An app of its own, so that its broker settings (the Redis visibility timeout) can differ
per worker process without touching the suite's app (:mod:`tests.support.celery_app`):
a worker started with ``-A tests.support.deploy_tasks`` reads ``REDIS_URL``,
``DEPLOY_VISIBILITY_TIMEOUT`` and ``DEPLOY_POLLING_INTERVAL`` (see :func:`configure`)
from its environment. Redis databases as the suite's app:
broker 1, results 2, the idempotency records 0 (the test settings' cache), and what the
jobs did in 3, where every process (worker parent, prefork child, test) can read it.

Per label the jobs keep, in db 3:

* ``deploy:deliveries:<label>``: a list of ``"<time> <pid>"``, one per delivery of a
  message to a task (``task_prerun``, before the idempotency door);
* ``deploy:starts:<label>``: the same, one per run of a task body (behind the door);
* ``deploy:runs:<label>``: the number of body runs (``INCR``);
* ``deploy:ends:<label>``: one ``"<time> <pid>"`` per body that returned.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery, Task
from celery.signals import task_prerun

from django_idempotency.celery import IdempotentTask

from .celery_app import with_db  # also sets Django up (DJANGO_SETTINGS_MODULE, setup())

#: The lease of the job that outlives it (promise b): its body runs LONG_RUN seconds.
SHORT_LOCK_TTL = 2
LONG_RUN = 5.0

#: The lease of the job whose worker is killed (promise c), and how long a duplicate
#: waits before giving up (then Celery retries it). The wait timeout is much longer than
#: the lease, so a takeover at the lease's end and one at the wait's end look different.
#: The lease must outlast the start of a fresh worker process and its first sweep for
#: abandoned messages (1-4 s here), so that the redelivery reaches that worker while the
#: dead owner's claim still holds the key.
KILL_LOCK_TTL = 8
KILL_WAIT_TIMEOUT = 30

app = Celery("deploy", set_as_current=False)


def configure(
    redis_url: str, visibility_timeout: float = 3600, polling_interval: float | None = None
) -> None:
    """Point the app at the Redis server at ``redis_url``.

    ``visibility_timeout``: how long a delivered, unacknowledged message stays with its
    consumer before a worker's sweep puts it back in its queue. That sweep is the only way
    the message of a worker killed as a whole (no parent left to reject it) comes back.
    Small only for the fresh worker that should pick it up: every worker sweeps every
    consumer's messages, so a small value in a live worker would also hand out again the
    messages of jobs that are still running.

    ``polling_interval``: the seconds each ``BRPOP`` waits for a message (kombu's default
    is 1). A worker without an event loop (the gevent pool) sweeps only when its 2-second
    poll for messages ends with no reply at all, which a 1-second ``BRPOP`` never lets
    happen (kombu#1025, celery#4976): such a worker needs a longer one to sweep.
    """
    options: dict[str, float] = {
        "visibility_timeout": visibility_timeout,
        # Sweep every second, each time (kombu's defaults: every 10 s, one in 10).
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
    if polling_interval is not None:
        options["polling_interval"] = polling_interval
    app.conf.update(
        broker_url=with_db(redis_url, 1),
        result_backend=with_db(redis_url, 2),
        # A killed worker process gives its message back, to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=600,
        broker_transport_options=options,
    )


configure(
    os.environ.get("REDIS_URL", "redis://127.0.0.1:1/0"),
    float(os.environ.get("DEPLOY_VISIBILITY_TIMEOUT", 3600)),
    float(os.environ["DEPLOY_POLLING_INTERVAL"])
    if "DEPLOY_POLLING_INTERVAL" in os.environ
    else None,
)


def side_effects() -> redis.Redis:
    """The Redis database where the jobs write what they did."""
    return redis.Redis.from_url(with_db(app.conf.broker_url, 3))


def _note(what: str, label: str) -> None:
    side_effects().rpush(f"deploy:{what}:{label}", f"{time.time()} {os.getpid()}")


def _ran(label: str) -> int:
    """Note a body's start; which run of ``label`` this is (1 for the first)."""
    client = side_effects()
    client.rpush(f"deploy:starts:{label}", f"{time.time()} {os.getpid()}")
    return int(client.incr(f"deploy:runs:{label}"))


@task_prerun.connect
def _count_delivery(task: Task | None = None, args: Any = (), **_: Any) -> None:
    # Only this app's jobs: the signal is global, other apps' tasks run in the suite too.
    if task is not None and getattr(task, "app", None) is app and args:
        _note("deliveries", args[0])


def _by_label(label: str, *_: Any, **__: Any) -> str:
    """The business key: every message for one label is one job, whatever its task id."""
    return label


@app.task(base=IdempotentTask, idempotency_key=_by_label, shared=False)
def once(label: str, seconds: float) -> dict[str, Any]:
    """Run for ``seconds``; return which run this was, and where it ran."""
    n = _ran(label)
    time.sleep(seconds)
    _note("ends", label)
    return {"label": label, "run": n, "pid": os.getpid()}


@app.task(
    base=IdempotentTask,
    idempotency_key=_by_label,
    idempotency_lock_ttl=SHORT_LOCK_TTL,
    idempotency_wait_timeout=15,
    shared=False,
)
def outlives_lease(label: str) -> dict[str, Any]:
    """Runs LONG_RUN seconds, well past its lease (SHORT_LOCK_TTL), which it renews."""
    n = _ran(label)
    time.sleep(LONG_RUN)
    _note("ends", label)
    return {"label": label, "run": n, "pid": os.getpid()}


@app.task(
    base=IdempotentTask,
    idempotency_key=_by_label,
    idempotency_lock_ttl=KILL_LOCK_TTL,
    idempotency_wait_timeout=KILL_WAIT_TIMEOUT,
    shared=False,
)
def killed_once(label: str) -> dict[str, Any]:
    """The first run takes a minute (the test kills it); later runs return at once."""
    n = _ran(label)
    if n == 1:
        time.sleep(60)
    _note("ends", label)
    return {"label": label, "run": n, "pid": os.getpid()}
