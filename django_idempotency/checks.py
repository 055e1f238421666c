"""Django system checks for django-idempotency (ids ``django_idempotency.E0NN/E1NN/W0NN``)."""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

MIDDLEWARE_PATH = "django_idempotency.middleware.IdempotencyMiddleware"
AUTH_MIDDLEWARE_PATH = "django.contrib.auth.middleware.AuthenticationMiddleware"
#: Where every setting is documented (generated from the settings table).
SETTINGS_DOCS = "https://django-idempotency.readthedocs.io/en/latest/reference/settings.html"
CORS_MIDDLEWARE_PATH = "corsheaders.middleware.CorsMiddleware"


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every problem of settings.IDEMPOTENCY at once: E100 for its shape (not a dict, an
    unknown key, with the closest known name), E1NN for a bad value of the NNth setting."""
    from .conf import problems

    _, found = problems(getattr(settings, "IDEMPOTENCY", None))
    return [
        checks.Error(
            problem.message,
            hint="Fix settings.IDEMPOTENCY; every setting: " + SETTINGS_DOCS,
            id=problem.id,
        )
        for problem in found
    ]


@checks.register(checks.Tags.compatibility)
def check_redis(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E002: IDEMPOTENCY["REDIS"] names a cache alias that is not a django-redis cache."""
    from .conf import DEFAULTS
    from .stores.redis.connection import cache_alias

    user = getattr(settings, "IDEMPOTENCY", None) or {}
    target = cache_alias(user.get("REDIS", DEFAULTS["REDIS"]) if isinstance(user, dict) else None)
    if target is None:
        return []
    cache = getattr(settings, "CACHES", {}).get(target)
    if cache is None:
        message = f'IDEMPOTENCY["REDIS"] names the cache alias {target!r}, which is not in CACHES.'
        fix = "Add a django-redis cache under that alias"
    elif "django_redis" not in str(cache.get("BACKEND", "")):
        message = (
            f"CACHES[{target!r}] is not a django-redis cache (BACKEND is {cache.get('BACKEND')!r})."
        )
        fix = 'Use "django_redis.cache.RedisCache"'
    else:
        return []
    hint = f'{fix}, or set IDEMPOTENCY["REDIS"] to a redis:// URL.'
    return [checks.Error(message, hint=hint, id="django_idempotency.E002")]


def _scope_reads_headers_only() -> bool:
    from .conf import get_settings
    from .edge.scope import from_headers

    try:
        return from_headers(get_settings().SCOPE) is not None
    except ImproperlyConfigured:
        return False  # reported by check_settings


@checks.register(checks.Tags.compatibility)
def check_middleware_order(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E003: the middleware runs before AuthenticationMiddleware, so request.user is unknown."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware or AUTH_MIDDLEWARE_PATH not in middleware:
        return []
    if middleware.index(MIDDLEWARE_PATH) > middleware.index(AUTH_MIDDLEWARE_PATH):
        return []
    if _scope_reads_headers_only():
        return []  # request.user plays no part in the scope: any place will do
    return [
        checks.Error(
            "IdempotencyMiddleware is placed before AuthenticationMiddleware, so it "
            "cannot scope keys by user: one user's key could replay another's response.",
            hint=f"Move {MIDDLEWARE_PATH!r} after {AUTH_MIDDLEWARE_PATH!r} in MIDDLEWARE.",
            id="django_idempotency.E003",
        )
    ]


@checks.register(checks.Tags.compatibility)
def check_durable_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W003: ``DURABLE`` is on, but the middleware (which cannot be durable) is installed."""
    user = getattr(settings, "IDEMPOTENCY", None)
    durable = isinstance(user, dict) and user.get("DURABLE") is True
    if not durable or MIDDLEWARE_PATH not in list(getattr(settings, "MIDDLEWARE", None) or []):
        return []
    return [
        checks.Warning(
            'IDEMPOTENCY["DURABLE"] is True, but views covered by IdempotencyMiddleware are '
            "not durable: the middleware is called before and after the view, not around "
            "its transaction, so it cannot write the result's row in it.",
            hint="Cover the views that must be durable with @idempotent_view or the DRF "
            "mixin (they are durable under DURABLE); silence this check if the rest may "
            "stay at-least-once after a crash.",
            id="django_idempotency.W003",
        )
    ]


@checks.register(checks.Tags.compatibility)
def check_threads(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E004: the server (uWSGI without ``enable-threads``) may never run the lease keeper."""
    from .lease import renewal_blocker

    reason = renewal_blocker()
    if reason is None:
        return []
    return [
        checks.Error(
            reason,
            hint="Add `enable-threads = true` to the [uwsgi] section (or pass --enable-threads).",
            id="django_idempotency.E004",
        )
    ]


#: How long the deployment check below waits for Redis to answer.
PROBE_TIMEOUT = 3.0


@checks.register(checks.Tags.caches, deploy=True)
def check_eviction_policy(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W001: Redis may evict records; W002: Redis could not be asked.

    Every record has a TTL, so ``volatile-*`` policies evict them as readily as
    ``allkeys-*``: only ``noeviction`` (or no ``maxmemory`` at all) is safe. An evicted
    running record lets a concurrent duplicate run the action a second time.

    It asks the server (every primary of a Cluster), so it is a deployment check
    (``manage.py check --deploy``): it waits at most :data:`PROBE_TIMEOUT` seconds, and
    warns, never fails, when Redis does not answer.
    """
    from .conf import build
    from .stores.redis.connection import memory_policies

    try:
        target = build(getattr(settings, "IDEMPOTENCY", None)).REDIS
    except ImproperlyConfigured:
        return []  # check_settings says why
    if check_redis():
        return []  # E002 says why
    answer: dict[str, Any] = {}

    def probe() -> None:
        try:
            answer["nodes"] = memory_policies(target)
        except Exception as exc:
            answer["error"] = exc

    # A thread bounds the wait whatever timeouts the configured client has.
    thread = threading.Thread(target=probe, name="idempotency-check", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT)
    nodes: dict[str, tuple[str | None, int]] | None = answer.get("nodes")
    if nodes is None or any(policy is None for policy, _ in nodes.values()):
        reason = answer.get("error") or (
            f"no answer within {PROBE_TIMEOUT:g} s" if nodes is None else "no maxmemory_policy"
        )
        return [
            checks.Warning(
                f"Could not read the maxmemory-policy of the Redis behind "
                f'IDEMPOTENCY["REDIS"] ({reason}).',
                hint="Make sure it is reachable from here, and that its maxmemory-policy is "
                "noeviction: an evicted record can let an action run twice.",
                id="django_idempotency.W002",
            )
        ]
    risky = {
        node: policy
        for node, (policy, maxmemory) in nodes.items()
        if maxmemory and policy != "noeviction"
    }
    if not risky:
        return []
    where = ", ".join(f"{node} ({policy})" for node, policy in sorted(risky.items()))
    return [
        checks.Warning(
            f'The Redis behind IDEMPOTENCY["REDIS"] may evict idempotency records when it '
            f"reaches maxmemory: maxmemory-policy is not noeviction on {where}. An evicted "
            "record lets a duplicate or a retry run the action a second time.",
            hint="Set maxmemory-policy noeviction on that server (records all have TTLs, so "
            "volatile-* policies evict them too), or keep the records in a Redis of their own. "
            "A full noeviction Redis refuses new records (503) rather than forgetting old ones.",
            id="django_idempotency.W001",
        )
    ]


def _headers(value: Any) -> set[str] | None:
    """A CORS header list, lower-cased; ``None`` when it is not a list of names."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        return None
    return {str(h).lower() for h in value}


@checks.register(checks.Tags.security)
def check_cors(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W004: django-cors-headers is in use, and browsers on other origins may not send
    the key (``CORS_ALLOW_HEADERS``) or read the replay marker (``CORS_EXPOSE_HEADERS``).

    Read from the settings alone (django-cors-headers' documented defaults when unset),
    so the check needs nothing imported from that package.
    """
    if CORS_MIDDLEWARE_PATH not in (getattr(settings, "MIDDLEWARE", None) or ()) and (
        "corsheaders" not in getattr(settings, "INSTALLED_APPS", ())
    ):
        return []
    from .conf import DEFAULTS, get_settings

    try:
        header, replayed = get_settings().HEADER, get_settings().REPLAY_HEADER
    except ImproperlyConfigured:  # check_settings reports it
        header, replayed = DEFAULTS["HEADER"], DEFAULTS["REPLAY_HEADER"]
    found: list[checks.CheckMessage] = []
    # Unset, CORS_ALLOW_HEADERS is django-cors-headers' default list, which lacks the key.
    allowed = _headers(getattr(settings, "CORS_ALLOW_HEADERS", ()))
    if allowed is not None and "*" not in allowed and header.lower() not in allowed:
        found.append(
            checks.Warning(
                f"CORS_ALLOW_HEADERS does not allow {header}: a browser on another origin "
                "refuses to send it, so its requests are not protected (or get 400 where "
                "the key is required).",
                hint=f'CORS_ALLOW_HEADERS = (*corsheaders.defaults.default_headers, "{header}")',
                id="django_idempotency.W004",
            )
        )
    exposed = _headers(getattr(settings, "CORS_EXPOSE_HEADERS", ()))
    if exposed is not None and replayed.lower() not in exposed:
        found.append(
            checks.Warning(
                f"CORS_EXPOSE_HEADERS does not expose {replayed}: scripts on another origin "
                "cannot tell a replayed response from a first one.",
                hint=f'CORS_EXPOSE_HEADERS = ["{replayed}", "Retry-After"]',
                id="django_idempotency.W004",
            )
        )
    return found
