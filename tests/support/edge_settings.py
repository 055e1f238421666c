"""Settings of the edge's test project: records scoped by an API key header.

The idempotency middleware comes first, so the response it stores is the one the
client got (every other middleware added its headers first): an in-Django replay and
an edge replay of it are then the same bytes. The counting middleware sits just
inside it and counts every request that reaches Django's middleware.
"""

from .settings import *  # noqa: F403

ROOT_URLCONF = "tests.support.edge_app"
MIDDLEWARE = [
    "django_idempotency.middleware.IdempotencyMiddleware",
    "tests.support.edge_app.CountingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# Small, so a test can send a body over Django's limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
IDEMPOTENCY = {
    "REDIS": "default",
    "SCOPE": "tests.support.edge_app.api_key_scope",
    "OBSERVERS": ["django_idempotency.observers.prometheus.PrometheusObserver"],
}
