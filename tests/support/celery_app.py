"""The suite's Celery app: Redis as broker (db 1) and result backend (db 2).

The worker process imports this module with ``REDIS_URL`` pointing at a server the
test started; the idempotency records live in db 0 (the test settings' cache), the
jobs' own side effects in db 3 (:mod:`tests.support.jobs`).
"""

from __future__ import annotations

import os
import threading

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.settings")
django.setup()


def with_db(url: str, db: int) -> str:
    """``redis://host:port/0`` with another database number."""
    return f"{url.rsplit('/', 1)[0]}/{db}"


app = Celery("tests", include=["tests.support.jobs"], set_as_current=False)


def configure(redis_url: str) -> None:
    """Point the app (broker, results) at the Redis server at ``redis_url``.

    A second module pointing it at its own server must not reach the first one's (long
    gone) through what the app keeps: its connection pool, producers and result backend.
    """
    app._pool = None
    app.amqp._producer_pool = None
    app._backend_cache = None
    app._local = threading.local()
    app.conf.update(
        broker_url=with_db(redis_url, 1),
        result_backend=with_db(redis_url, 2),
        # A killed worker process gives its message back, to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=600,
    )


configure(os.environ.get("REDIS_URL", "redis://127.0.0.1:1/0"))
