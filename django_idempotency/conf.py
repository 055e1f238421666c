"""``settings.IDEMPOTENCY`` read into one frozen, validated object.

Every key, with its type, default, validator, check id and meaning, is one field of
:class:`IdempotencySettings` below, so this is the one place to look. Values are checked by
the validators of :mod:`.options` (the same ones the doors' per-view options use), and
every error names the key (``IDEMPOTENCY["LOCK_TTL"] must be ...``). The object is built
once, on first use, and rebuilt when Django's ``setting_changed`` signal fires
(``override_settings`` in tests).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import re
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import options as o
from .policies import STORE_2XX_4XX, STORE_2XX_5XX, OutcomeUnknownPolicy, StorePolicy

SETTING_NAME = "IDEMPOTENCY"


def _name(key: str) -> str:
    return f'{SETTING_NAME}["{key}"]'


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
        observer = o.importable(item, at) if isinstance(item, str) else item
        if isinstance(observer, type):
            if observer not in _made_observers:
                _made_observers[observer] = observer()
            observer = _made_observers[observer]
        if not all(callable(getattr(observer, m, None)) for m in ("event", "store_op", "span")):
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


def _on_redis_error(value: Any, where: str) -> str:
    if value not in ("fail_closed", "fail_open"):
        raise o.bad(where, "one of 'fail_closed', 'fail_open'", value)
    return str(value)


def _optional_positive_int(value: Any, where: str) -> int | None:
    return None if value is None else o.positive_int(value, where)


def _optional_factory(value: Any, where: str) -> Callable[[], Any] | None:
    return None if value is None else o.importable(value, where)


def _encryption_keys(value: Any, where: str) -> tuple[bytes, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise o.bad(where, "a list of keys (urlsafe base64 of 16, 24 or 32 bytes)", value)
    keys: list[bytes] = []
    for i, item in enumerate(value):
        raw = item if isinstance(item, bytes) else None
        if isinstance(item, str):
            with contextlib.suppress(binascii.Error, ValueError):
                raw = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
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


def _optional_store_responses(value: Any, where: str) -> StorePolicy | None:
    """``None`` (``"2xx-4xx"``, or ``"2xx-5xx"`` with ``STORE_SERVER_ERRORS``), a status
    range (``"2xx"``, ``"2xx-3xx"``, ``"2xx-4xx"``, ``"2xx-5xx"``), a set of status codes,
    or a callable (or dotted path) response -> bool."""
    return None if value is None else o.store_responses(value, where)


def _uri(value: Any, where: str) -> str:
    """An absolute URI (``https://...#``, ``urn:...``): each problem's slug is appended."""
    uri = o.text(value, where)
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:\S+$", uri):
        raise o.bad(where, "an absolute URI (e.g. https://example.com/problems/)", uri)
    return uri


Validator = Callable[[Any, str], Any]


def setting(number: int, default: Any, validate: Validator, doc: str) -> Any:
    """One row of the settings table: the field's type is the validated value's.

    ``number`` is the setting's own system check, ``django_idempotency.E1NN``: fixed per
    setting, never derived from its position, so ids stay put when settings are added.
    """
    return field(metadata={"number": number, "default": default, "validate": validate, "doc": doc})


@dataclass(frozen=True)
class IdempotencySettings:
    """The validated settings, and the table of every key (one :func:`setting` a field):
    obtain it with :func:`get_settings`."""

    REDIS: str | Callable[[], Any] = setting(
        101,
        "default",
        _redis,
        "A django-redis cache alias, a redis:// / rediss:// / unix:// URL, or a callable (or "
        "dotted path to one) returning a redis-py client, e.g. RedisCluster or Sentinel.",
    )
    ASYNC_REDIS: Callable[[], Any] | None = setting(
        102,
        None,
        _optional_factory,
        "A callable (or dotted path) returning a redis.asyncio client for the asyncio "
        "doors; by default one is derived from REDIS.",
    )
    KEY_PREFIX: str = setting(
        103, "idem", _prefix, "First part of every Redis key this app writes; no braces."
    )
    TTL: float = setting(
        104, 86400, o.duration, "How long a finished record is kept and replayed (seconds)."
    )
    LOCK_TTL: float = setting(
        105,
        30,
        o.duration,
        "Lease on a running record; renewed while the action runs, expires after a crash.",
    )
    WAIT_TIMEOUT: float = setting(
        106,
        10,
        o.duration,
        "How long a concurrent duplicate waits for the first request to finish.",
    )
    CONFLICT: o.Conflict = setting(
        107,
        "wait",
        o.conflict,
        '"wait": duplicates wait and replay; "reject": duplicates get 409 at once.',
    )
    MAX_WAITERS: int | None = setting(
        108,
        None,
        _optional_positive_int,
        "Most duplicates one process lets wait at once; the excess gets 409 with Retry-After.",
    )
    ON_REDIS_ERROR: str = setting(
        109,
        "fail_closed",
        _on_redis_error,
        '"fail_closed": Redis down -> 503, nothing runs; "fail_open": run unprotected.',
    )
    HEADER: str = setting(110, "Idempotency-Key", o.text, "Request header carrying the key.")
    METHODS: frozenset[str] = setting(
        111, ("POST", "PATCH"), o.methods, "HTTP methods the doors protect."
    )
    REQUIRED: bool = setting(
        112, False, o.boolean, "Whether a protected request without a key is refused (400)."
    )
    MAX_KEY_LENGTH: int = setting(113, 255, o.positive_int, "Longer keys get 400.")
    KEY_FORMAT: re.Pattern[str] | None = setting(
        114,
        None,
        o.key_format,
        'None (any visible ASCII), "uuid", or a regular expression keys must match.',
    )
    MAX_BODY_BYTES: int = setting(
        115,
        1024 * 1024,
        o.positive_int,
        "Responses with a larger body are not stored; retries get a problem+json 422.",
    )
    SCOPE: Callable[..., str] = setting(
        116,
        "django_idempotency.http.default_scope",
        o.importable,
        "Callable (or dotted path) request -> scope string.",
    )
    FINGERPRINT: Callable[..., str | bytes] = setting(
        117,
        "django_idempotency.http.default_fingerprint",
        o.importable,
        "Callable (or dotted path) request -> fingerprint (str or bytes).",
    )
    REPLAY_HEADER: str = setting(
        118, "Idempotent-Replayed", o.text, 'Header added to replayed responses (value "true").'
    )
    STORE_SERVER_ERRORS: bool = setting(
        119, False, o.boolean, "Store and replay 5xx responses instead of releasing the key."
    )
    VALUE_SERIALIZER: Any = setting(
        120,
        "django_idempotency.serializers.JSONValueSerializer",
        o.serializer,
        "Serializer (object, class or dotted path) for run() return values.",
    )
    ERROR_SERIALIZER: Any = setting(
        121,
        "django_idempotency.serializers.JSONErrorSerializer",
        o.serializer,
        "Serializer (object, class or dotted path) for run() errors.",
    )
    COMPRESS_MIN_BYTES: int | None = setting(
        122,
        1024,
        o.optional_size,
        "Payloads of at least this many bytes are compressed when that saves space (None: never).",
    )
    ENCRYPTION_KEYS: tuple[bytes, ...] = setting(
        123,
        (),
        _encryption_keys,
        "AES-GCM keys (urlsafe base64 of 16, 24 or 32 bytes): the first encrypts, all decrypt.",
    )
    DURABLE: bool = setting(
        124,
        False,
        o.boolean,
        "Durable mode: responses also kept in the database, in the view's transaction.",
    )
    OBSERVERS: tuple[Any, ...] = setting(
        125,
        (),
        _observers,
        "Observers (objects, classes or dotted paths) given every outcome and store timing.",
    )
    STORE: Callable[[IdempotencySettings], Any] = setting(
        126,
        "django_idempotency.stores.redis.open_store",
        o.importable,
        "Callable (or dotted path) settings -> the store records live in: Redis by default, "
        '"django_idempotency.stores.memory.open_store" for one process.',
    )
    FORM_FIELD: str = setting(
        127,
        "idempotency_key",
        o.text,
        "Form field carrying the key when the header is absent (a form-encoded or multipart "
        "body); {% idempotency_key_field %} renders it.",
    )
    STORE_RESPONSES: StorePolicy = setting(
        128,
        None,
        _optional_store_responses,
        'Which responses are stored and replayed, the rest releasing the key: "2xx", '
        '"2xx-3xx", "2xx-4xx", "2xx-5xx", a set of statuses or a callable response -> bool '
        '(None: "2xx-4xx", or "2xx-5xx" with STORE_SERVER_ERRORS).',
    )
    OUTCOME_UNKNOWN: OutcomeUnknownPolicy = setting(
        129,
        "rerun",
        o.outcome_unknown,
        'A retry after the owner died unfinished: "rerun" runs the action again; "refuse" '
        "answers 409 outcome-unknown until an operator purges the record or it expires.",
    )
    PROBLEM_TYPE_BASE: str = setting(
        130,
        "https://django-idempotency.readthedocs.io/en/latest/reference/problems.html#",
        _uri,
        "Problem type URIs are this + the problem's slug (also sent as Link rel=describedby).",
    )
    DRF_EXCEPTION_HANDLER: bool = setting(
        131,
        False,
        o.boolean,
        "The DRF mixin raises its refusals as APIExceptions, so REST_FRAMEWORK's "
        "EXCEPTION_HANDLER formats them (default: problem+json as the other doors).",
    )

    @property
    def header_meta_key(self) -> str:
        """``HEADER`` as a WSGI environ key: ``Idempotency-Key`` -> ``HTTP_IDEMPOTENCY_KEY``."""
        return "HTTP_" + self.HEADER.upper().replace("-", "_")

    @property
    def fail_open(self) -> bool:
        """True when Redis errors let the action run unprotected."""
        return self.ON_REDIS_ERROR == "fail_open"


#: The table's rows, in order.
SETTINGS: tuple[Field[Any], ...] = fields(IdempotencySettings)
#: Every accepted key with its default, as a user would write it.
DEFAULTS: dict[str, Any] = {f.name: f.metadata["default"] for f in SETTINGS}
#: The check id of a ``settings.IDEMPOTENCY`` that is not a dict or has unknown keys.
SHAPE_CHECK = "django_idempotency.E100"


def check_id(key: str) -> str:
    """The system check id that reports a bad value of setting ``key``."""
    return next(f"django_idempotency.E{f.metadata['number']}" for f in SETTINGS if f.name == key)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with ``settings.IDEMPOTENCY``."""

    id: str
    message: str


def problems(user: Any) -> tuple[dict[str, Any], list[Problem]]:
    """Every problem of a user-supplied ``IDEMPOTENCY`` at once, and the values that passed.

    An unknown key names the closest known one, so a misspelling says what was meant.
    """
    user = {} if user is None else user
    if not isinstance(user, dict):
        return {}, [Problem(SHAPE_CHECK, f"{SETTING_NAME} must be a dict, got {user!r}")]
    found: list[Problem] = []
    for key in sorted(set(user) - set(DEFAULTS), key=str):
        close = difflib.get_close_matches(str(key).upper(), DEFAULTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(DEFAULTS)
        message = f"{SETTING_NAME} has an unknown key {key!r}{hint} (known keys: {known})"
        found.append(Problem(SHAPE_CHECK, message))
    values: dict[str, Any] = {}
    for f in SETTINGS:
        raw = user.get(f.name, f.metadata["default"])
        try:
            values[f.name] = f.metadata["validate"](raw, _name(f.name))
        except ImproperlyConfigured as exc:
            found.append(Problem(check_id(f.name), str(exc)))
    if values.get("STORE_SERVER_ERRORS") and values.get("STORE_RESPONSES") is not None:
        # Two answers to one question: refuse rather than let one silently win.
        both = f"{_name('STORE_RESPONSES')} and {_name('STORE_SERVER_ERRORS')} are both set"
        message = f'{both}: drop STORE_SERVER_ERRORS (it means STORE_RESPONSES = "2xx-5xx")'
        found.append(Problem(check_id("STORE_RESPONSES"), message))
    if "STORE_RESPONSES" in values and values["STORE_RESPONSES"] is None:
        values["STORE_RESPONSES"] = (
            STORE_2XX_5XX if values.get("STORE_SERVER_ERRORS") else STORE_2XX_4XX
        )
    return values, found


def build(user: Any) -> IdempotencySettings:
    """Validate a user-supplied ``IDEMPOTENCY`` dict into :class:`IdempotencySettings`.

    Raises ``ImproperlyConfigured`` naming every bad key (``manage.py check`` reports
    each under its own id).
    """
    values, found = problems(user)
    if found:
        raise ImproperlyConfigured("; ".join(p.message for p in found))
    return IdempotencySettings(**values)


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


# The doors' merged options hold settings too: they are merged again after a change.
on_reload(o.settings_changed)


#: Django settings whose change invalidates what was built from them.
_WATCHED = {SETTING_NAME, "CACHES", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "DATABASES"}


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    global _cached
    if setting in _WATCHED:
        _cached = None
        for callback in _listeners:
            callback()
