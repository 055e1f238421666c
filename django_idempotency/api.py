"""The plain-Python door: ``run(key, action)`` for tasks, webhooks and scripts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .flows.run import RunFlow
from .options import NONE, OLD_SCOPE, Overrides, named

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import RunKeywords

T = TypeVar("T")

_flow = RunFlow()
_validated: dict[tuple[tuple[str, type, Any], ...], Overrides] = {}


def run_options(options: RunKeywords | dict[str, Any], label: str) -> Overrides:
    """``options`` validated as ``<label>(name=...)`` keywords (cached while hashable)."""
    if not options:
        return NONE
    # Each value's type is part of the key: True == 1, but only one of them is a valid ttl.
    cache_key = tuple(sorted((name, type(value), value) for name, value in options.items()))
    try:
        overrides = _validated.get(cache_key)
    except TypeError:  # an unhashable value
        return Overrides.validate(options, "run", named(label), stacklevel=3)
    if overrides is None:
        overrides = Overrides.validate(options, "run", named(label), stacklevel=3)
        # Options under the old name are not kept: each call warns about the name.
        if len(_validated) < 1024 and OLD_SCOPE not in options:
            _validated[cache_key] = overrides
    return overrides


def run(key: str | bytes, action: Callable[[], T], **options: Unpack[RunKeywords]) -> T:
    """Run ``action()`` at most once per ``key`` across processes.

    The first caller runs the action and its return value (or exception) is stored for
    ``ttl`` seconds; concurrent callers wait up to ``wait_timeout`` and later callers get
    the same value back, or the same exception re-raised. When ``should_ignore_error(exc)``
    is true the key is released instead, so the next call runs the action again.

    Options (all validated before anything runs; ``None`` means the
    ``settings.IDEMPOTENCY`` value): ``scope`` (a string: equal keys in different scopes
    are different keys; ``namespace`` is its deprecated old name), ``ttl``, ``lock_ttl``,
    ``wait_timeout``, ``conflict`` (``"wait"`` or ``"reject"``), ``outcome_unknown``
    (``"rerun"``, or ``"refuse"``: if this claim's process dies before the outcome is
    stored, later calls raise ``OutcomeUnknown`` until the record is purged), ``durable`` (the
    action and a row of its result run in one database transaction of their own, so a
    committed result is replayed even if Redis forgets it; not inside
    ``transaction.atomic()``, and not for ``arun()``), ``should_ignore_error``,
    ``value_serializer``, ``error_serializer``, ``on_action_success``,
    ``on_action_error``, ``on_success_replay``, ``on_error_replay``.

    Raises :class:`~django_idempotency.exceptions.IdempotencyTimeout` when waiting runs
    out, :class:`~django_idempotency.exceptions.RequestInProgress` in ``reject`` mode,
    :class:`~django_idempotency.exceptions.OutcomeUnknown` for a key whose owner died
    unfinished under the ``refuse`` policy,
    :class:`~django_idempotency.exceptions.IdempotencyUnavailable` when Redis is down
    (fail-closed), :class:`~django_idempotency.exceptions.RecordTampered` when the stored
    record fails verification, and :class:`~django_idempotency.exceptions.ResultNotStored`
    when the action ran but its outcome could not be stored.
    """
    overrides = run_options(options, "run")
    return _flow.run(key, action, overrides.run())


async def arun(
    key: str | bytes, action: Callable[[], Awaitable[T]], **options: Unpack[RunKeywords]
) -> T:
    """Like :func:`run` for an ``action`` that returns an awaitable; same options."""
    overrides = run_options(options, "arun")
    overrides.refuse_durable_async("arun()")
    return await _flow.arun(key, action, overrides.run())
