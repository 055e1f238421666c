"""Settings for a django-tasks-db worker and for the processes that enqueue to it.

The suite's settings, plus the database task backend, on the SQLite file named by
``TEST_DB_PATH`` (required: the worker and the enqueuing process must share one file).
"""

import os

from .settings import *  # noqa: F403
from .settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]

DATABASES["default"]["NAME"] = os.environ["TEST_DB_PATH"]

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
