"""Django settings for the test suite (and for servers the tests start).

The Redis URL comes from ``REDIS_URL``: the ``redis_server`` fixture starts a
private server and points this at it; a subprocess server inherits it.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "tests.support.urls"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_idempotency",
    "tests.support",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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
        "NAME": os.environ.get("TEST_DB_PATH", str(BASE_DIR / "test.sqlite3")),
        # Seconds a writer waits for SQLite's lock: bursts of 2,000 writers queue for it.
        "OPTIONS": {"timeout": 60},
        "TEST": {"NAME": os.environ.get("TEST_DB_PATH") or None},
    }
}

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:1/0")

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        # Short, so the fault tests see a dead Redis quickly; the storm tests' servers
        # raise them (an event loop busy with 2,000 requests on a loaded machine can take
        # seconds to finish a connect that Redis answered at once).
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": float(os.environ.get("REDIS_CONNECT_TIMEOUT", 2)),
            "SOCKET_TIMEOUT": float(os.environ.get("REDIS_SOCKET_TIMEOUT", 5)),
        },
    }
}

IDEMPOTENCY: dict[str, object] = {"REDIS": "default"}
if os.environ.get("TEST_PROMETHEUS") == "1":  # the observability tests' servers
    IDEMPOTENCY["OBSERVERS"] = ["django_idempotency.observers.prometheus.PrometheusObserver"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "null": {"class": "logging.NullHandler"},
        "stderr": {"class": "logging.StreamHandler", "level": "ERROR"},
    },
    "loggers": {
        "django_idempotency": {"handlers": ["null"], "propagate": True},
        # A 500 of a test server prints its traceback, so a failed burst says why.
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}
if os.environ.get("TEST_LOCK_TTL"):  # servers whose workers are killed: leases end sooner
    IDEMPOTENCY["LOCK_TTL"] = float(os.environ["TEST_LOCK_TTL"])
