"""The example's Celery app: the broker is the same Redis (database 1), no result backend.

``demo.py`` starts a worker (``celery -A exampleproject worker``) beside gunicorn; the
webhook receiver hands each event's settlement to :func:`webhooks.tasks.settle_event`.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleproject.settings")


def broker_url(redis_url: str) -> str:
    """Kombu's spelling of ``redis_url`` with database 1 (a unix socket or TCP)."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}?virtual_host=1"
    return f"{parts.scheme}://{parts.netloc}/1"


app = Celery("exampleproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.broker_url = broker_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.autodiscover_tasks()
