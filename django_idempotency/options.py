"""One options model: every option of every door, declared once and validated once.

Settings, decorator arguments, mixin attributes, ``run()`` keywords and job attributes go
through the same validators, so they accept the same types and every error names where
the bad value came from. Doors validate when the view is decorated, the class is created
or the call is made, never after a view ran. A door keeps the options it was given as
:class:`Overrides`, merged with the settings at first use (and again after a settings
change) into a frozen :class:`HttpOptions` or :class:`RunOptions` that holds all a
request needs, so the lifecycles never read the settings.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .policies import OutcomeUnknownPolicy, StatusSet, StorePolicy, status_range

if TYPE_CHECKING:
    from .serializers.base import ErrorSerializer, ValueSerializer


class InvalidOption(ImproperlyConfigured, TypeError, ValueError):
    """A setting or a door's option has a bad value; the message says which and where.

    It is an ``ImproperlyConfigured`` (a configuration error, raised before anything
    runs) and also a ``TypeError``/``ValueError``, what Python code passing a bad
    argument expects.
    """


class Conflict(str, Enum):
    """What a concurrent duplicate does while the first request runs."""

    def __str__(self) -> str:
        return self.value

    WAIT = "wait"
    REJECT = "reject"


#: Names a bad value's origin, e.g. ``lambda name: f"@idempotent_view({name}=...)"``.
Where = Callable[[str], str]

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
_UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def bad(where: str, what: str, value: Any) -> InvalidOption:
    """The error for a bad value: ``<where> must be <what>, got <value>``."""
    return InvalidOption(f"{where} must be {what}, got {value!r}")


# -- validators: (value, where) -> normalized value ---------------------------------------


def duration(value: Any, where: str) -> float:
    """A positive duration: seconds as int or float, or a ``timedelta``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise bad(where, "a positive number of seconds or a timedelta", value)
    return float(value)


def positive_int(value: Any, where: str) -> int:
    """A positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad(where, "a positive integer", value)
    return value


def optional_size(value: Any, where: str) -> int | None:
    """``None``, or a byte count of zero or more."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad(where, "None or a number of bytes (0 or more)", value)
    return value


def boolean(value: Any, where: str) -> bool:
    """``True`` or ``False``."""
    if not isinstance(value, bool):
        raise bad(where, "True or False", value)
    return value


def text(value: Any, where: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise bad(where, "a non-empty string", value)
    return value


def run_scope(value: Any, where: str) -> str:
    """Any string, the empty one included."""
    if not isinstance(value, str):
        raise bad(where, "a string", value)
    return value


def _member(kind: type[Enum], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise bad(where, "one of " + ", ".join(f'"{m.value}"' for m in kind), value) from None


def conflict(value: Any, where: str) -> Conflict:
    """``"wait"`` or ``"reject"``."""
    return Conflict(_member(Conflict, value, where))


def importable(value: Any, where: str) -> Any:
    """A callable, or a dotted path to one (imported now)."""
    if isinstance(value, str):
        try:
            return import_string(value)
        except ImportError as exc:
            raise InvalidOption(
                f"{where} must be an importable dotted path, got {value!r} ({exc})"
            ) from exc
    if not callable(value):
        raise bad(where, "a callable or a dotted path to one", value)
    return value


def optional_callable(value: Any, where: str) -> Callable[..., Any] | None:
    """``None`` or a callable."""
    if value is not None and not callable(value):
        raise bad(where, "a callable", value)
    checked: Callable[..., Any] | None = value
    return checked


def serializer(value: Any, where: str) -> Any:
    """An object with ``dumps``/``loads``, its class, or a dotted path to either."""
    value = importable(value, where) if isinstance(value, str) else value
    if isinstance(value, type):
        value = value()
    if not (callable(getattr(value, "dumps", None)) and callable(getattr(value, "loads", None))):
        raise bad(where, "a serializer with dumps() and loads() methods", value)
    return value


def store_responses(value: Any, where: str) -> StorePolicy:
    """Which HTTP responses are stored: a range (``"2xx"``, ``"2xx-3xx"``, ``"2xx-4xx"``,
    ``"2xx-5xx"``), a set of status codes, or a callable (or dotted path) response -> bool."""
    what = (
        'a status range ("2xx", "2xx-3xx", "2xx-4xx" or "2xx-5xx"), a set of status '
        "codes (200-599), or a callable (or dotted path) response -> bool"
    )
    if isinstance(value, str):
        found = status_range(value)
        if found is not None:
            return found
        if "." not in value:
            raise bad(where, what, value)
        return importable(value, where)  # type: ignore[no-any-return]
    if isinstance(value, (list, tuple, set, frozenset)):
        if not value or not all(
            isinstance(s, int) and not isinstance(s, bool) and 200 <= s <= 599 for s in value
        ):
            raise bad(where, what, value)
        return StatusSet(frozenset(value))
    if not callable(value):
        raise bad(where, what, value)
    return value  # type: ignore[no-any-return]


def outcome_unknown(value: Any, where: str) -> OutcomeUnknownPolicy:
    """``"rerun"`` (run the action again) or ``"refuse"`` (409 until resolved)."""
    return OutcomeUnknownPolicy(_member(OutcomeUnknownPolicy, value, where))


def methods(value: Any, where: str) -> frozenset[str]:
    """A collection of HTTP method names (upper-cased)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise bad(where, "a list of HTTP method names", value)
    upper = {str(m).upper() for m in value}
    unknown = upper - _METHODS
    if unknown:
        raise bad(where, "a list of HTTP method names", sorted(unknown))
    return frozenset(upper)


def key_format(value: Any, where: str) -> re.Pattern[str] | None:
    """``None`` (any visible ASCII), ``"uuid"``, or a regular expression."""
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
            raise bad(where, f'None, "uuid" or a valid regular expression ({exc})', value) from exc
    raise bad(where, 'None, "uuid" or a regular expression', value)


# -- the per-door options -----------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One option: its validator, the setting it defaults from, and which doors take it."""

    check: Callable[[Any, str], Any]
    setting: str | None
    kinds: frozenset[str]
    #: The doors whose default is the setting; the others get :attr:`default`.
    setting_kinds: frozenset[str] | None = None
    #: The default where no setting applies.
    default: Any = None
    #: The validator for ``run()`` and the job doors where theirs differs from :attr:`check`.
    run_check: Callable[[Any, str], Any] | None = None

    def checker(self, kind: str) -> Callable[[Any, str], Any]:
        """The validator for a door of ``kind``."""
        return self.run_check if kind == _RUN and self.run_check is not None else self.check


_HTTP, _RUN = "http", "run"
_HTTP_ONLY, _RUN_ONLY = frozenset({_HTTP}), frozenset({_RUN})
_BOTH = _HTTP_ONLY | _RUN_ONLY

#: Every per-view and per-call option. With no setting, the option's default is fixed.
SPECS: dict[str, Spec] = {
    "ttl": Spec(duration, "TTL", _BOTH),
    "lock_ttl": Spec(duration, "LOCK_TTL", _BOTH),
    "wait_timeout": Spec(duration, "WAIT_TIMEOUT", _BOTH),
    "conflict": Spec(conflict, "CONFLICT", _BOTH),
    # DURABLE is the HTTP doors' default only: a durable run() runs its action in a
    # transaction of its own, which must be asked for where the call is written.
    "durable": Spec(boolean, "DURABLE", _BOTH, _HTTP_ONLY, default=False),
    "methods": Spec(methods, "METHODS", _HTTP_ONLY),
    "required": Spec(boolean, "REQUIRED", _HTTP_ONLY),
    # The part of a record's identity that is not the key: a callable request -> str for
    # the HTTP doors (the SCOPE setting), a string given where a call is written for run().
    "scope": Spec(importable, "SCOPE", _BOTH, _HTTP_ONLY, default="", run_check=run_scope),
    "fingerprint": Spec(importable, "FINGERPRINT", _HTTP_ONLY),
    "store_responses": Spec(store_responses, "STORE_RESPONSES", _HTTP_ONLY),
    "outcome_unknown": Spec(outcome_unknown, "OUTCOME_UNKNOWN", _BOTH),
    "value_serializer": Spec(serializer, "VALUE_SERIALIZER", _RUN_ONLY),
    "error_serializer": Spec(serializer, "ERROR_SERIALIZER", _RUN_ONLY),
    "should_ignore_error": Spec(optional_callable, None, _RUN_ONLY),
    "on_action_success": Spec(optional_callable, None, _RUN_ONLY),
    "on_action_error": Spec(optional_callable, None, _RUN_ONLY),
    "on_success_replay": Spec(optional_callable, None, _RUN_ONLY),
    "on_error_replay": Spec(optional_callable, None, _RUN_ONLY),
}


@dataclass(frozen=True)
class _Common:
    ttl: float
    lock_ttl: float
    wait_timeout: float
    conflict: Conflict
    durable: bool
    outcome_unknown: OutcomeUnknownPolicy
    # From the settings alone (see SETTINGS_ONLY).
    fail_open: bool


@dataclass(frozen=True)
class HttpOptions(_Common):
    """What an HTTP door applies to a request: settings merged with its overrides."""

    methods: frozenset[str]
    required: bool
    scope: Callable[..., str]
    fingerprint: Callable[..., str | bytes]
    store_responses: StorePolicy
    # From the settings alone, the same for every HTTP door (see SETTINGS_ONLY).
    header: str
    header_meta_key: str
    form_field: str
    max_key_length: int
    key_format: re.Pattern[str] | None
    max_body_bytes: int
    replay_header: str
    problem_type_base: str
    drf_exception_handler: bool


@dataclass(frozen=True)
class RunOptions(_Common):
    """What ``run()`` (and the job doors) apply to one call."""

    scope: str
    value_serializer: ValueSerializer
    error_serializer: ErrorSerializer
    should_ignore_error: Callable[[BaseException], bool] | None
    on_action_success: Callable[[Any, Any], None] | None
    on_action_error: Callable[[Any, BaseException], None] | None
    on_success_replay: Callable[[Any, Any], None] | None
    on_error_replay: Callable[[Any, BaseException], None] | None


#: The fields of the merged options that no door sets, with the settings attribute each is.
SETTINGS_ONLY: dict[str, str] = {
    "header": "HEADER",
    "header_meta_key": "header_meta_key",
    "form_field": "FORM_FIELD",
    "max_key_length": "MAX_KEY_LENGTH",
    "key_format": "KEY_FORMAT",
    "max_body_bytes": "MAX_BODY_BYTES",
    "replay_header": "REPLAY_HEADER",
    "fail_open": "fail_open",
    "problem_type_base": "PROBLEM_TYPE_BASE",
    "drf_exception_handler": "DRF_EXCEPTION_HANDLER",
}


#: A duration as every option accepts it.
Duration = int | float | timedelta


class RunKeywords(TypedDict, total=False):
    """The keyword options of ``run()``/``arun()`` (``None``: the setting's value)."""

    scope: str
    #: Deprecated: renamed to ``scope``; removed in the next major release.
    namespace: str
    ttl: Duration | None
    lock_ttl: Duration | None
    wait_timeout: Duration | None
    conflict: Literal["wait", "reject"] | Conflict | None
    durable: bool | None
    outcome_unknown: Literal["rerun", "refuse"] | OutcomeUnknownPolicy | None
    should_ignore_error: Callable[[BaseException], bool] | None
    value_serializer: ValueSerializer | type[ValueSerializer] | str | None
    error_serializer: ErrorSerializer | type[ErrorSerializer] | str | None
    on_action_success: Callable[[Any, Any], None] | None
    on_action_error: Callable[[Any, BaseException], None] | None
    on_success_replay: Callable[[Any, Any], None] | None
    on_error_replay: Callable[[Any, BaseException], None] | None


#: ``scope``'s old name on the run doors, accepted with a ``DeprecationWarning`` until the
#: next major release.
OLD_SCOPE = "namespace"


#: Bumped whenever the settings change: merged options of an older generation are stale.
_generation = 0


def settings_changed() -> None:
    """Forget every merged options object (the settings they were merged with changed)."""
    global _generation
    _generation += 1


class Overrides:
    """A door's validated options; the rest is filled from the settings at first use."""

    __slots__ = ("_http", "_run", "values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        # (the settings generation merged under, the merged options)
        self._http: tuple[int, HttpOptions] | None = None
        self._run: tuple[int, RunOptions] | None = None

    @classmethod
    def validate(
        cls, given: Mapping[str, Any], kind: str, where: Where, *, stacklevel: int = 2
    ) -> Overrides:
        """Check every option in ``given`` for a door of ``kind`` (``"http"``/``"run"``).

        ``None`` means "the setting's default". :data:`OLD_SCOPE` means ``scope`` on the run
        doors and warns; ``stacklevel`` points the warning at the code that gave the options,
        counted as ``warnings.warn`` counts it from the caller of this method.
        """
        checked: dict[str, Any] = {}
        for name, value in given.items():
            option = name
            if name == OLD_SCOPE and kind == _RUN:
                option = "scope"
                if option in given:
                    raise InvalidOption(
                        f"{where(name)} and {where(option)} are one option, given twice "
                        f"({name} is the old name of {option}): give only {where(option)}"
                    )
                warnings.warn(
                    f"{where(name)} is renamed to {where(option)}; the old name will be "
                    "removed in the next major release.",
                    DeprecationWarning,
                    stacklevel=stacklevel + 1,
                )
            spec = SPECS.get(option)
            if spec is None or kind not in spec.kinds:
                known = ", ".join(sorted(n for n, s in SPECS.items() if kind in s.kinds))
                raise InvalidOption(f"{where(name)} is not an option here; known: {known}")
            if value is not None:
                # A bad value is reported under the name it was given as.
                checked[option] = spec.checker(kind)(value, where(name))
        return cls(checked)

    def _merged(self, target: type[Any]) -> tuple[int, Any]:
        from .conf import get_settings

        # The generation is read first: settings changing meanwhile make it stale.
        generation = _generation
        settings = get_settings()
        values: dict[str, Any] = {}
        kind = _HTTP if target is HttpOptions else _RUN
        for f in fields(target):
            if f.name in self.values:
                values[f.name] = self.values[f.name]
            elif f.name in SETTINGS_ONLY:
                values[f.name] = getattr(settings, SETTINGS_ONLY[f.name])
            else:
                spec = SPECS[f.name]
                if spec.setting and (spec.setting_kinds is None or kind in spec.setting_kinds):
                    values[f.name] = getattr(settings, spec.setting)
                else:
                    values[f.name] = spec.default
        return generation, target(**values)

    def http(self) -> HttpOptions:
        """What an HTTP door applies to a request, under the current settings."""
        # One read of the slot: another thread may replace it meanwhile.
        merged = self._http
        if merged is None or merged[0] != _generation:
            merged = self._http = self._merged(HttpOptions)
        return merged[1]

    def run(self) -> RunOptions:
        """What a ``run()`` call applies, under the current settings."""
        # One read of the slot: another thread may replace it meanwhile.
        merged = self._run
        if merged is None or merged[0] != _generation:
            merged = self._run = self._merged(RunOptions)
        return merged[1]

    def refuse_durable_async(self, where: str) -> None:
        """Refuse ``durable=True`` for a coroutine (``where`` names it).

        Durable mode writes the result in the work's database transaction, and Django's
        transactions are synchronous: an async view or ``arun()`` cannot hold one.
        """
        if self.values.get("durable"):
            raise InvalidOption(
                f"{where} is async, and durable=True needs a sync one: durable mode writes "
                "the result in the work's database transaction, which a coroutine cannot "
                "hold. Make it sync, or leave durable off."
            )


NONE = Overrides({})


def named(label: str) -> Where:
    """``where`` for keyword arguments: ``named("run")("ttl") == "run(ttl=...)"``."""
    return lambda name: f"{label}({name}=...)"


def keyed(label: str) -> Where:
    """``where`` for a mapping: ``keyed("X.idempotency_options")("ttl")``."""
    return lambda name: f'{label}["{name}"]'


def attributes(label: str, prefix: str = "") -> Where:
    """``where`` for class attributes: ``attributes("ChargeTask", "idempotency_")("ttl")``."""
    return lambda name: f"{label}.{prefix}{name}"
