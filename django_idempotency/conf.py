"""``settings.IDEMPOTENCY`` read into one frozen, validated object.

Every key, its default and its meaning lives in :data:`DEFAULTS` below, so this is
the one place to look. The object is built once, on first use, and rebuilt when
Django's ``setting_changed`` signal fires (``override_settings`` in tests).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

SETTING_NAME = "IDEMPOTENCY"

#: Every accepted key with its default. Durations are seconds (int, float or timedelta).
DEFAULTS: dict[str, Any] = {
    # A django-redis cache alias, a redis:// / rediss:// / unix:// URL, or a callable
    # (or dotted path to one) returning a redis-py client, e.g. RedisCluster or Sentinel.
    "REDIS": "default",
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
    # Callable (or dotted path) request -> fingerprint string.
    "FINGERPRINT": "django_idempotency.http.default_fingerprint",
    # Header added to replayed responses (value "true").
    "REPLAY_HEADER": "Idempotent-Replayed",
    # Store and replay 5xx responses instead of releasing the key.
    "STORE_SERVER_ERRORS": False,
    # Serializers (objects, classes or dotted paths) for run() return values and errors.
    "VALUE_SERIALIZER": "django_idempotency.serializers.JSONValueSerializer",
    "ERROR_SERIALIZER": "django_idempotency.serializers.JSONErrorSerializer",
}

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
_UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


@dataclass(frozen=True)
class IdempotencySettings:
    """The validated settings; obtain it with :func:`get_settings`."""

    REDIS: str | Callable[[], Any]
    KEY_PREFIX: str
    TTL: float
    LOCK_TTL: float
    WAIT_TIMEOUT: float
    CONFLICT: str
    ON_REDIS_ERROR: str
    HEADER: str
    METHODS: frozenset[str]
    REQUIRED: bool
    MAX_KEY_LENGTH: int
    KEY_FORMAT: re.Pattern[str] | None
    MAX_BODY_BYTES: int
    SCOPE: Callable[..., str]
    FINGERPRINT: Callable[..., str]
    REPLAY_HEADER: str
    STORE_SERVER_ERRORS: bool
    VALUE_SERIALIZER: Any
    ERROR_SERIALIZER: Any

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


def _bad(key: str, what: str, value: Any) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{_name(key)} must be {what}, got {value!r}")


def seconds(key: str, value: Any) -> float:
    """Validate a positive duration (number of seconds or timedelta) for setting ``key``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _bad(key, "a positive number of seconds", value)
    return float(value)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, "a positive integer", value)
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _bad(key, "one of " + ", ".join(repr(c) for c in choices), value)
    return str(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, "True or False", value)
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(key, "a non-empty string", value)
    return value


def importable(key: str, value: Any) -> Any:
    """Resolve a dotted path (or pass a callable/class through) for setting ``key``."""
    if isinstance(value, str):
        try:
            return import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"{_name(key)} must be an importable dotted path, got {value!r} ({exc})"
            ) from exc
    if not callable(value):
        raise _bad(key, "a callable or a dotted path to one", value)
    return value


def serializer(key: str, value: Any) -> Any:
    """Resolve a serializer: an object with ``dumps``/``loads``, its class, or a dotted path."""
    value = importable(key, value) if isinstance(value, str) else value
    if isinstance(value, type):
        value = value()
    if not (callable(getattr(value, "dumps", None)) and callable(getattr(value, "loads", None))):
        raise _bad(key, "a serializer with dumps() and loads() methods", value)
    return value


def methods(key: str, value: Any) -> frozenset[str]:
    """Validate a collection of HTTP method names for setting ``key``."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise _bad(key, "a list of HTTP method names", value)
    upper = {str(m).upper() for m in value}
    unknown = upper - _METHODS
    if unknown:
        raise _bad(key, "a list of HTTP method names", sorted(unknown))
    return frozenset(upper)


def key_format(key: str, value: Any) -> re.Pattern[str] | None:
    """Validate the optional key format: None, ``"uuid"`` or a regular expression."""
    if value is None:
        return None
    if value == "uuid":
        return re.compile(_UUID_RE)
    if isinstance(value, re.Pattern):
        return value
    if isinstance(value, str):
        try:
            return re.compile(value)
        except re.error as exc:
            raise _bad(key, f'None, "uuid" or a valid regular expression ({exc})', value) from exc
    raise _bad(key, 'None, "uuid" or a regular expression', value)


def _redis(key: str, value: Any) -> str | Callable[[], Any]:
    if callable(value):
        return value  # type: ignore[no-any-return]
    text = _text(key, value)
    if "://" in text:
        if not text.startswith(("redis://", "rediss://", "unix://")):
            raise _bad(key, "a cache alias or a redis://, rediss:// or unix:// URL", text)
        return text
    if "." in text:
        return importable(key, text)  # type: ignore[no-any-return]
    return text


def _prefix(key: str, value: Any) -> str:
    text = _text(key, value)
    # Braces would break the hash tag that keeps one record in one Cluster slot.
    if any(c in text for c in "{}*?[]\\") or not text.isprintable() or " " in text:
        raise _bad(key, "printable text without spaces, braces or glob characters", text)
    return text


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
    return IdempotencySettings(
        REDIS=_redis("REDIS", v["REDIS"]),
        KEY_PREFIX=_prefix("KEY_PREFIX", v["KEY_PREFIX"]),
        TTL=seconds("TTL", v["TTL"]),
        LOCK_TTL=seconds("LOCK_TTL", v["LOCK_TTL"]),
        WAIT_TIMEOUT=seconds("WAIT_TIMEOUT", v["WAIT_TIMEOUT"]),
        CONFLICT=_choice("CONFLICT", v["CONFLICT"], ("wait", "reject")),
        ON_REDIS_ERROR=_choice("ON_REDIS_ERROR", v["ON_REDIS_ERROR"], ("fail_closed", "fail_open")),
        HEADER=_text("HEADER", v["HEADER"]),
        METHODS=methods("METHODS", v["METHODS"]),
        REQUIRED=_bool("REQUIRED", v["REQUIRED"]),
        MAX_KEY_LENGTH=_positive_int("MAX_KEY_LENGTH", v["MAX_KEY_LENGTH"]),
        KEY_FORMAT=key_format("KEY_FORMAT", v["KEY_FORMAT"]),
        MAX_BODY_BYTES=_positive_int("MAX_BODY_BYTES", v["MAX_BODY_BYTES"]),
        SCOPE=importable("SCOPE", v["SCOPE"]),
        FINGERPRINT=importable("FINGERPRINT", v["FINGERPRINT"]),
        REPLAY_HEADER=_text("REPLAY_HEADER", v["REPLAY_HEADER"]),
        STORE_SERVER_ERRORS=_bool("STORE_SERVER_ERRORS", v["STORE_SERVER_ERRORS"]),
        VALUE_SERIALIZER=serializer("VALUE_SERIALIZER", v["VALUE_SERIALIZER"]),
        ERROR_SERIALIZER=serializer("ERROR_SERIALIZER", v["ERROR_SERIALIZER"]),
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


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    global _cached
    if setting in (SETTING_NAME, "CACHES"):
        _cached = None
        for callback in _listeners:
            callback()
