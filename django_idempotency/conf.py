"""``settings.IDEMPOTENCY`` read into one frozen, validated object.

Every key, its default and its meaning lives in :data:`DEFAULTS` below, so this is the
one place to look. Values are checked by the validators of :mod:`.options` (the same
ones the doors' per-view options use), and every error names the key
(``IDEMPOTENCY["LOCK_TTL"] must be ...``). The object is built once, on first use, and
rebuilt when Django's ``setting_changed`` signal fires (``override_settings`` in tests).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import options as o

SETTING_NAME = "IDEMPOTENCY"

#: Every accepted key with its default. Durations are seconds (int, float or timedelta).
DEFAULTS: dict[str, Any] = {
    # A django-redis cache alias, a redis:// / rediss:// / unix:// URL, or a callable
    # (or dotted path to one) returning a redis-py client, e.g. RedisCluster or Sentinel.
    "REDIS": "default",
    # Optional callable (or dotted path) returning a redis.asyncio client for the asyncio
    # doors; by default one is derived from REDIS.
    "ASYNC_REDIS": None,
    # First part of every Redis key this app writes; must not contain braces.
    "KEY_PREFIX": "idem",
    # How long a finished record is kept and replayed (Stripe keeps 24 h).
    "TTL": 86400,
    # Lease on a running record; renewed while the action runs, expires after a crash.
    "LOCK_TTL": 30,
    # How long a concurrent duplicate waits for the first request to finish.
    "WAIT_TIMEOUT": 10,
    # "wait": duplicates wait and replay; "reject": duplicates get 409 at once.
    "CONFLICT": "wait",
    # Most duplicates one process lets wait at once; the excess gets 409 with Retry-After.
    "MAX_WAITERS": None,
    # "fail_closed": Redis down -> 503, nothing runs; "fail_open": run unprotected, log a warning.
    "ON_REDIS_ERROR": "fail_closed",
    # Request header carrying the key.
    "HEADER": "Idempotency-Key",
    # HTTP methods the doors protect.
    "METHODS": ("POST", "PATCH"),
    # Whether a protected request without a key is refused with 400.
    "REQUIRED": False,
    "MAX_KEY_LENGTH": 255,
    # Optional key format: None (any visible ASCII), "uuid", or a regular expression.
    "KEY_FORMAT": None,
    # Responses with a larger body are not stored; retries get a problem+json 422.
    "MAX_BODY_BYTES": 1024 * 1024,
    # Callable (or dotted path) request -> scope string.
    "SCOPE": "django_idempotency.http.default_scope",
    # Callable (or dotted path) request -> fingerprint (str or bytes).
    "FINGERPRINT": "django_idempotency.http.default_fingerprint",
    # Header added to replayed responses (value "true").
    "REPLAY_HEADER": "Idempotent-Replayed",
    # Store and replay 5xx responses instead of releasing the key.
    "STORE_SERVER_ERRORS": False,
    # Serializers (objects, classes or dotted paths) for run() return values and errors.
    "VALUE_SERIALIZER": "django_idempotency.serializers.JSONValueSerializer",
    "ERROR_SERIALIZER": "django_idempotency.serializers.JSONErrorSerializer",
    # Payloads of at least this many bytes are compressed when that saves space (None: never).
    "COMPRESS_MIN_BYTES": 1024,
    # AES-GCM keys (urlsafe base64 of 16, 24 or 32 bytes): the first encrypts, all decrypt.
    "ENCRYPTION_KEYS": (),
    # Durable mode (responses also kept in the database, in the view's transaction).
    "DURABLE": False,
    # Observers (objects, classes or dotted paths) given every outcome and store timing,
    # e.g. "django_idempotency.observers.prometheus.PrometheusObserver".
    "OBSERVERS": (),
}


@dataclass(frozen=True)
class IdempotencySettings:
    """The validated settings; obtain it with :func:`get_settings`."""

    REDIS: str | Callable[[], Any]
    ASYNC_REDIS: Callable[[], Any] | None
    KEY_PREFIX: str
    TTL: float
    LOCK_TTL: float
    WAIT_TIMEOUT: float
    CONFLICT: o.Conflict
    MAX_WAITERS: int | None
    ON_REDIS_ERROR: str
    HEADER: str
    METHODS: frozenset[str]
    REQUIRED: bool
    MAX_KEY_LENGTH: int
    KEY_FORMAT: re.Pattern[str] | None
    MAX_BODY_BYTES: int
    SCOPE: Callable[..., str]
    FINGERPRINT: Callable[..., str | bytes]
    REPLAY_HEADER: str
    STORE_SERVER_ERRORS: bool
    VALUE_SERIALIZER: Any
    ERROR_SERIALIZER: Any
    COMPRESS_MIN_BYTES: int | None
    ENCRYPTION_KEYS: tuple[bytes, ...]
    DURABLE: bool
    OBSERVERS: tuple[Any, ...]

    @property
    def header_meta_key(self) -> str:
        """``HEADER`` as a WSGI environ key: ``Idempotency-Key`` -> ``HTTP_IDEMPOTENCY_KEY``."""
        return "HTTP_" + self.HEADER.upper().replace("-", "_")

    @property
    def fail_open(self) -> bool:
        """True when Redis errors let the action run unprotected."""
        return self.ON_REDIS_ERROR == "fail_open"


def _name(key: str) -> str:
    return f'{SETTING_NAME}["{key}"]'


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise o.bad(where, "one of " + ", ".join(repr(c) for c in choices), value)
    return str(value)


# Observers made from a class or a dotted path, by that class: the app installs them at
# startup and every settings build validates the same list, and both must get the
# instance that receives the events, not a new one each time.
_made_observers: dict[type, Any] = {}


def _observers(value: Any, where: str) -> tuple[Any, ...]:
    """A list of observers: instances, classes (made with no arguments) or dotted paths."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise o.bad(where, "a list of observers (objects, classes or dotted paths)", value)
    made = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        found = o.importable(item, at) if isinstance(item, str) else item
        if isinstance(found, type):
            if found not in _made_observers:
                _made_observers[found] = found()
            observer = _made_observers[found]
        else:
            observer = found
        missing = [
            m for m in ("event", "store_op", "span") if not callable(getattr(observer, m, None))
        ]
        if missing:
            raise o.bad(at, "an observer (with event(), store_op() and span())", item)
        made.append(observer)
    return tuple(made)


def observers_setting(value: Any) -> tuple[Any, ...]:
    """``IDEMPOTENCY["OBSERVERS"]`` alone, validated and made (for the app's startup)."""
    return _observers(value, _name("OBSERVERS"))


def _redis(value: Any, where: str) -> str | Callable[[], Any]:
    if callable(value):
        return value  # type: ignore[no-any-return]
    url = o.text(value, where)
    if "://" in url:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise o.bad(where, "a cache alias or a redis://, rediss:// or unix:// URL", url)
        return url
    if "." in url:
        return o.importable(url, where)  # type: ignore[no-any-return]
    return url


def _prefix(value: Any, where: str) -> str:
    prefix = o.text(value, where)
    # Braces would break the hash tag that keeps one record in one Cluster slot.
    if any(c in prefix for c in "{}*?[]\\") or not prefix.isprintable() or " " in prefix:
        raise o.bad(where, "printable text without spaces, braces or glob characters", prefix)
    return prefix


def _optional_positive_int(value: Any, where: str) -> int | None:
    return None if value is None else o.positive_int(value, where)


def _optional_factory(value: Any, where: str) -> Callable[[], Any] | None:
    return None if value is None else o.importable(value, where)


def _encryption_keys(value: Any, where: str) -> tuple[bytes, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise o.bad(where, "a list of keys (urlsafe base64 of 16, 24 or 32 bytes)", value)
    keys: list[bytes] = []
    for i, item in enumerate(value):
        raw: bytes | None = None
        if isinstance(item, bytes) and len(item) in (16, 24, 32):
            raw = item
        elif isinstance(item, str):
            try:
                raw = base64.urlsafe_b64decode(item.encode() + b"=" * (-len(item) % 4))
            except (binascii.Error, ValueError):
                raw = None
        if raw is None or len(raw) not in (16, 24, 32):
            raise o.InvalidOption(
                f"{where}[{i}] must be urlsafe base64 of 16, 24 or 32 random bytes "
                '(python -c "import base64, os; print(base64.urlsafe_b64encode('
                'os.urandom(32)).decode())")'
            )
        keys.append(raw)
    if keys:
        try:
            import cryptography  # noqa: F401
        except ImportError:
            raise o.InvalidOption(
                f"{where} needs the cryptography package: "
                "pip install django-idempotency[encryption]"
            ) from None
    return tuple(keys)


def build(user: Any) -> IdempotencySettings:
    """Validate a user-supplied ``IDEMPOTENCY`` dict into :class:`IdempotencySettings`."""
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise ImproperlyConfigured(f"{SETTING_NAME} must be a dict, got {user!r}")
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"{SETTING_NAME} has unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(sorted(DEFAULTS))}"
        )
    v = {**DEFAULTS, **user}

    def check(key: str, validator: Callable[[Any, str], Any]) -> Any:
        return validator(v[key], _name(key))

    return IdempotencySettings(
        REDIS=check("REDIS", _redis),
        ASYNC_REDIS=check("ASYNC_REDIS", _optional_factory),
        KEY_PREFIX=check("KEY_PREFIX", _prefix),
        TTL=check("TTL", o.duration),
        LOCK_TTL=check("LOCK_TTL", o.duration),
        WAIT_TIMEOUT=check("WAIT_TIMEOUT", o.duration),
        CONFLICT=check("CONFLICT", o.conflict),
        MAX_WAITERS=check("MAX_WAITERS", _optional_positive_int),
        ON_REDIS_ERROR=check(
            "ON_REDIS_ERROR", lambda x, w: _choice(x, w, ("fail_closed", "fail_open"))
        ),
        HEADER=check("HEADER", o.text),
        METHODS=check("METHODS", o.methods),
        REQUIRED=check("REQUIRED", o.boolean),
        MAX_KEY_LENGTH=check("MAX_KEY_LENGTH", o.positive_int),
        KEY_FORMAT=check("KEY_FORMAT", o.key_format),
        MAX_BODY_BYTES=check("MAX_BODY_BYTES", o.positive_int),
        SCOPE=check("SCOPE", o.importable),
        FINGERPRINT=check("FINGERPRINT", o.importable),
        REPLAY_HEADER=check("REPLAY_HEADER", o.text),
        STORE_SERVER_ERRORS=check("STORE_SERVER_ERRORS", o.boolean),
        VALUE_SERIALIZER=check("VALUE_SERIALIZER", o.serializer),
        ERROR_SERIALIZER=check("ERROR_SERIALIZER", o.serializer),
        COMPRESS_MIN_BYTES=check("COMPRESS_MIN_BYTES", o.optional_size),
        ENCRYPTION_KEYS=check("ENCRYPTION_KEYS", _encryption_keys),
        DURABLE=check("DURABLE", o.boolean),
        OBSERVERS=check("OBSERVERS", _observers),
    )


_cached: IdempotencySettings | None = None
_listeners: list[Callable[[], None]] = []


def get_settings() -> IdempotencySettings:
    """The current validated settings (built on first use, rebuilt after a change)."""
    global _cached
    if _cached is None:
        _cached = build(getattr(django_settings, SETTING_NAME, None))
    return _cached


def on_reload(callback: Callable[[], None]) -> Callable[[], None]:
    """Register ``callback`` to run whenever the settings are reset (e.g. to drop caches)."""
    _listeners.append(callback)
    return callback


#: Django settings whose change invalidates what was built from them.
_WATCHED = {SETTING_NAME, "CACHES", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "DATABASES"}


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    global _cached
    if setting in _WATCHED:
        _cached = None
        for callback in _listeners:
            callback()
