"""Django settings for the benchmark project: the smallest stack that serves JSON.

``BENCH_STACK`` picks the middleware, so every measured server runs the same code
except the one piece under test:

``bare``        no middleware at all;
``floor``       :class:`benchmarks.floor.FloorMiddleware` (raw redis-py, the minimum);
``middleware``  ``IdempotencyMiddleware``;
``mixin``       no middleware; the DRF view at ``/drf-mixin/`` uses ``IdempotentMixin``;
``afloor``      :class:`benchmarks.floor.AsyncFloorMiddleware` (raw redis.asyncio, under ASGI);
``edge``        ``IdempotencyMiddleware`` with a scope the edge can compute; with
                ``BENCH_EDGE=1`` the application is wrapped by ``django_idempotency.edge``;
``storm``       ``IdempotencyMiddleware`` behind :class:`benchmarks.urls.StormClockMiddleware`
                (timestamps, outcome, serving pid and Redis commands as response
                headers) for the duplicate storms, under gunicorn or uvicorn.

For storms (and with ``BENCH_NAME_CONNECTIONS=1``) every Redis connection of a process is
named ``bench-<pid>`` (``CLIENT SETNAME``, sent once per connection), so ``CLIENT LIST``
and MONITOR can tell which process holds or sent what.

No sessions, no auth, no database: the default scope is then ``anonymous`` and the
measured difference is the idempotency work alone.
"""

import os

SECRET_KEY = "benchmarks-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "benchmarks.urls"
DATABASES: dict[str, dict[str, str]] = {}
INSTALLED_APPS = ["rest_framework", "django_idempotency", "benchmarks"]

STACK = os.environ.get("BENCH_STACK", "bare")
MIDDLEWARE = {
    "bare": [],
    "floor": ["benchmarks.floor.FloorMiddleware"],
    "middleware": ["django_idempotency.middleware.IdempotencyMiddleware"],
    "mixin": [],
    "afloor": ["benchmarks.floor.AsyncFloorMiddleware"],
    "edge": ["django_idempotency.middleware.IdempotencyMiddleware"],
    "storm": [
        "benchmarks.urls.StormClockMiddleware",
        "django_idempotency.middleware.IdempotencyMiddleware",
    ],
}[STACK]

redis_options: dict[str, object] = {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5}
if STACK == "storm" or os.environ.get("BENCH_NAME_CONNECTIONS"):
    redis_options["CONNECTION_POOL_KWARGS"] = {"client_name": f"bench-{os.getpid()}"}
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "OPTIONS": redis_options,
    }
}
IDEMPOTENCY = {"REDIS": "default"}
if STACK == "edge":
    IDEMPOTENCY["SCOPE"] = "benchmarks.edge.anonymous_scope"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
