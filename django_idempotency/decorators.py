"""Door 2: ``@idempotent_view`` and ``@idempotency_exempt`` for function views.

Class-based views use ``method_decorator(idempotent_view(...), name="dispatch")``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from asgiref.sync import iscoroutinefunction

from . import conf
from .doors import DOOR_ATTR, EXEMPT_ATTR, take
from .service import get_service, in_thread

V = TypeVar("V", bound=Callable[..., Any])


def idempotency_exempt(view: V) -> V:
    """Mark ``view`` so that ``IdempotencyMiddleware`` leaves it alone."""
    setattr(view, EXEMPT_ATTR, True)
    return view


def _overrides(
    required: bool | None,
    ttl: float | None,
    lock_ttl: float | None,
    wait_timeout: float | None,
    methods: Iterable[str] | None,
    scope: Callable[..., str] | str | None,
    fingerprint: Callable[..., str] | str | None,
    conflict: str | None,
) -> dict[str, Any]:
    # Validated here, at decoration time, with the same rules as the settings.
    checked: dict[str, Any] = {}
    if required is not None:
        if not isinstance(required, bool):
            raise TypeError(f"required must be True or False, got {required!r}")
        checked["required"] = required
    for name, value in (("ttl", ttl), ("lock_ttl", lock_ttl), ("wait_timeout", wait_timeout)):
        if value is not None:
            checked[name] = conf.seconds(name, value)
    if methods is not None:
        checked["methods"] = conf.methods("methods", methods)
    if scope is not None:
        checked["scope"] = conf.importable("scope", scope)
    if fingerprint is not None:
        checked["fingerprint"] = conf.importable("fingerprint", fingerprint)
    if conflict is not None:
        if conflict not in ("wait", "reject"):
            raise ValueError(f'conflict must be "wait" or "reject", got {conflict!r}')
        checked["conflict"] = conflict
    return checked


@overload
def idempotent_view(view: V) -> V: ...


@overload
def idempotent_view(
    view: None = None,
    *,
    required: bool | None = None,
    ttl: float | None = None,
    lock_ttl: float | None = None,
    wait_timeout: float | None = None,
    methods: Iterable[str] | None = None,
    scope: Callable[..., str] | str | None = None,
    fingerprint: Callable[..., str] | str | None = None,
    conflict: str | None = None,
) -> Callable[[V], V]: ...


def idempotent_view(
    view: V | None = None,
    *,
    required: bool | None = None,
    ttl: float | None = None,
    lock_ttl: float | None = None,
    wait_timeout: float | None = None,
    methods: Iterable[str] | None = None,
    scope: Callable[..., str] | str | None = None,
    fingerprint: Callable[..., str] | str | None = None,
    conflict: str | None = None,
) -> V | Callable[[V], V]:
    """Make a function view idempotent; use bare or with per-view overrides.

    Arguments left as ``None`` take their ``settings.IDEMPOTENCY`` values at request
    time, so ``override_settings`` keeps working.
    """
    overrides = _overrides(
        required, ttl, lock_ttl, wait_timeout, methods, scope, fingerprint, conflict
    )

    def decorate(view: V) -> V:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                if not take(request):
                    return await view(request, *args, **kwargs)
                service = get_service()
                begin = await in_thread(service.begin, request, service.policy(**overrides))
                if begin.ticket is None:
                    return begin.response or await view(request, *args, **kwargs)
                try:
                    response = await view(request, *args, **kwargs)
                except BaseException:
                    await in_thread(service.abort, begin.ticket)
                    raise
                # Async views cannot run under ATOMIC_REQUESTS, so store right away.
                await in_thread(service.settle, begin.ticket, response)
                return response

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(view)
            def sync_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                if not take(request):
                    return view(request, *args, **kwargs)
                service = get_service()
                begin = service.begin(request, service.policy(**overrides))
                if begin.ticket is None:
                    return begin.response or view(request, *args, **kwargs)
                try:
                    response = view(request, *args, **kwargs)
                except BaseException:
                    service.abort(begin.ticket)
                    raise
                return service.finish(begin.ticket, response)

            wrapper = sync_wrapper
        setattr(wrapper, DOOR_ATTR, True)
        return wrapper  # type: ignore[no-any-return]

    if view is not None:
        return decorate(view)
    return decorate
