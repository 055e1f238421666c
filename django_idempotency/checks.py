"""Django system checks for django-idempotency (ids ``django_idempotency.E00x/W00x``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

MIDDLEWARE_PATH = "django_idempotency.middleware.IdempotencyMiddleware"
AUTH_MIDDLEWARE_PATH = "django.contrib.auth.middleware.AuthenticationMiddleware"


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001: settings.IDEMPOTENCY is invalid (bad value, unknown key, bad dotted path)."""
    from .conf import build

    try:
        build(getattr(settings, "IDEMPOTENCY", None))
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="Fix settings.IDEMPOTENCY; see the settings table in the README.",
                id="django_idempotency.E001",
            )
        ]
    return []


@checks.register(checks.Tags.compatibility)
def check_redis(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E002: IDEMPOTENCY["REDIS"] names a cache alias that is not a django-redis cache."""
    from .conf import DEFAULTS

    user = getattr(settings, "IDEMPOTENCY", None) or {}
    target = user.get("REDIS", DEFAULTS["REDIS"]) if isinstance(user, dict) else None
    if not isinstance(target, str) or "://" in target or "." in target:
        return []
    cache = getattr(settings, "CACHES", {}).get(target)
    if cache is None:
        return [
            checks.Error(
                f'IDEMPOTENCY["REDIS"] names the cache alias {target!r}, which is not in CACHES.',
                hint='Add a django-redis cache under that alias, or set IDEMPOTENCY["REDIS"] '
                "to a redis:// URL.",
                id="django_idempotency.E002",
            )
        ]
    if "django_redis" not in str(cache.get("BACKEND", "")):
        return [
            checks.Error(
                f"CACHES[{target!r}] is not a django-redis cache "
                f"(BACKEND is {cache.get('BACKEND')!r}).",
                hint='Use "django_redis.cache.RedisCache", or set IDEMPOTENCY["REDIS"] to a '
                "redis:// URL.",
                id="django_idempotency.E002",
            )
        ]
    return []


@checks.register(checks.Tags.compatibility)
def check_middleware_order(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E003: the middleware runs before AuthenticationMiddleware, so request.user is unknown."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware or AUTH_MIDDLEWARE_PATH not in middleware:
        return []
    if middleware.index(MIDDLEWARE_PATH) < middleware.index(AUTH_MIDDLEWARE_PATH):
        return [
            checks.Error(
                "IdempotencyMiddleware is placed before AuthenticationMiddleware, so it "
                "cannot scope keys by user: one user's key could replay another's response.",
                hint=f"Move {MIDDLEWARE_PATH!r} after {AUTH_MIDDLEWARE_PATH!r} in MIDDLEWARE.",
                id="django_idempotency.E003",
            )
        ]
    return []
