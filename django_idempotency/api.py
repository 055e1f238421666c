"""The plain-Python door: ``run(key, action)`` for tasks, webhooks and scripts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .service import get_service

T = TypeVar("T")


def run(
    key: str | bytes,
    action: Callable[[], T],
    *,
    namespace: str = "",
    ttl: float | None = None,
    lock_ttl: float | None = None,
    wait_timeout: float | None = None,
    should_ignore_error: Callable[[BaseException], bool] | None = None,
    value_serializer: Any = None,
    error_serializer: Any = None,
    on_action_success: Callable[[Any, Any], None] | None = None,
    on_action_error: Callable[[Any, BaseException], None] | None = None,
    on_success_replay: Callable[[Any, Any], None] | None = None,
    on_error_replay: Callable[[Any, BaseException], None] | None = None,
) -> T:
    """Run ``action()`` at most once per ``key`` (within ``namespace``) across processes.

    The first caller runs the action and its return value (or exception) is stored for
    ``ttl`` seconds; concurrent callers wait up to ``wait_timeout`` and later callers
    get the same value back, or the same exception re-raised. When
    ``should_ignore_error(exc)`` is true the key is released instead, so the next call
    runs the action again. ``None`` options take their ``settings.IDEMPOTENCY`` values.

    Raises :class:`~django_idempotency.exceptions.IdempotencyTimeout` when waiting runs
    out, :class:`~django_idempotency.exceptions.IdempotencyUnavailable` when Redis is
    down (fail-closed), and :class:`~django_idempotency.exceptions.ResultNotStored`
    when the action ran but its outcome could not be stored.
    """
    return get_service().run(
        key,
        action,
        namespace=namespace,
        ttl=ttl,
        lock_ttl=lock_ttl,
        wait_timeout=wait_timeout,
        should_ignore_error=should_ignore_error,
        value_serializer=value_serializer,
        error_serializer=error_serializer,
        on_action_success=on_action_success,
        on_action_error=on_action_error,
        on_success_replay=on_success_replay,
        on_error_replay=on_error_replay,
    )


async def arun(key: str | bytes, action: Callable[[], Awaitable[T]], **options: Any) -> T:
    """Like :func:`run` for an ``action`` that returns an awaitable; same options."""
    return await get_service().arun(key, action, **options)
