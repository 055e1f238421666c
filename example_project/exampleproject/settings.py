"""Settings of the example project: a payments API, a webhook receiver and a form.

Environment variables (all optional):

- ``REDIS_URL``: the Redis server to use. ``manage.py``, ``gunicorn.conf.py`` and
  ``demo.py`` set it to a private ``redis-server`` they start when it is unset.
- ``EXAMPLE_DB_PATH``: the SQLite file (default ``example_project/db.sqlite3``).
- ``DJANGO_DEBUG``: ``1`` (default) or ``0``.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "exampleproject.urls"
WSGI_APPLICATION = "exampleproject.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",  # the OpenAPI schema at /api/schema/
    "django_idempotency",
    "payments",
    "webhooks",
]

MIDDLEWARE = [
    "exampleproject.middleware.ServedByMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After AuthenticationMiddleware: keys are scoped per user. It covers every
    # POST/PATCH of the project (the donation form) and steps aside for views with
    # their own door (the DRF viewset's mixin, the webhook's decorator).
    "django_idempotency.middleware.IdempotencyMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB_PATH", str(BASE_DIR / "db.sqlite3")),
        # Several gunicorn workers share the file: wait for a lock rather than fail.
        "OPTIONS": {"timeout": 20},
    }
}

# manage.py, gunicorn.conf.py and demo.py export REDIS_URL, starting a private
# redis-server first when it is unset (see embedded_redis.py). Settings themselves
# start nothing: tools that import them (mypy, pytest) must not spawn servers.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
    }
}

IDEMPOTENCY = {
    "REDIS": "default",  # the django-redis cache alias above
    "TTL": 24 * 60 * 60,  # keep finished requests for 24 h, like Stripe
    "WAIT_TIMEOUT": 10,  # concurrent duplicates wait up to 10 s for the first
    # Prometheus metrics at /metrics (demo.py sets PROMETHEUS_MULTIPROC_DIR, so the
    # gunicorn workers and the Celery worker's processes are summed).
    "OBSERVERS": ["django_idempotency.observers.prometheus.PrometheusObserver"],
}

# Shared with the (fake) payment provider, which signs the webhooks it sends.
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET", "example-webhook-secret")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The schema documents the Idempotency-Key header, the 400/409/422/503 problems and the
# Idempotent-Replayed header on every operation a door protects (POST /api/charges/).
SPECTACULAR_SETTINGS = {
    "TITLE": "django-idempotency example project",
    "DEFAULT_GENERATOR_CLASS": "django_idempotency.openapi.SchemaGenerator",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_idempotency": {"handlers": ["console"], "level": "WARNING"}},
}

# Celery (exampleproject/celery.py): a worker that dies mid-task gives its message back,
# to be delivered again; IdempotentTask makes that second delivery replay, not rerun.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
