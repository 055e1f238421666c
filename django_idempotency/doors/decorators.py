"""``@idempotent_view`` and ``@idempotency_exempt`` for function views.

Class-based views use ``method_decorator(idempotent_view(...), name="dispatch")``.
Arguments are validated when the view is decorated; those left as ``None`` take their
``settings.IDEMPOTENCY`` values at request time, so ``override_settings`` keeps working.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

from asgiref.sync import iscoroutinefunction
from django.http import HttpResponseBase

from ..events import Door
from ..flows.http import HttpFlow
from ..options import Overrides, named
from . import DOOR_ATTR, EXEMPT_ATTR, FLOW_ATTR, take

V = TypeVar("V", bound=Callable[..., Any])
Duration = float | int | timedelta


def idempotency_exempt(view: V) -> V:
    """Mark ``view`` so that ``IdempotencyMiddleware`` leaves it alone."""
    setattr(view, EXEMPT_ATTR, True)
    return view


@overload
def idempotent_view(view: V) -> V: ...


@overload
def idempotent_view(
    view: None = None,
    *,
    required: bool | None = None,
    ttl: Duration | None = None,
    lock_ttl: Duration | None = None,
    wait_timeout: Duration | None = None,
    methods: Iterable[str] | None = None,
    scope: Callable[..., str] | str | None = None,
    fingerprint: Callable[..., str | bytes] | str | None = None,
    conflict: Literal["wait", "reject"] | None = None,
    durable: bool | None = None,
    store_responses: str | Collection[int] | Callable[[HttpResponseBase], bool] | None = None,
    outcome_unknown: Literal["rerun", "refuse"] | None = None,
) -> Callable[[V], V]: ...


def idempotent_view(view: V | None = None, **options: Any) -> V | Callable[[V], V]:
    """Make a function view idempotent; use bare or with per-view overrides.

    Overrides: ``required``, ``ttl``, ``lock_ttl``, ``wait_timeout``, ``methods``,
    ``scope``, ``fingerprint``, ``conflict``, ``durable`` (sync views: the response is also
    written to the database in the view's transaction, opened here when the view runs
    outside one; see the durable mode how-to), ``store_responses`` (which responses are
    stored: ``"2xx-4xx"`` by default) and ``outcome_unknown`` (``"rerun"`` or ``"refuse"``).
    A bad value raises ``ImproperlyConfigured`` here, naming it (``@idempotent_view(ttl=...)``).
    """
    overrides = Overrides.validate(options, "http", named("@idempotent_view"))

    def decorate(view: V) -> V:
        is_async = iscoroutinefunction(view)
        if is_async:
            overrides.refuse_durable_async(f"@idempotent_view(durable=True) on {view.__qualname__}")
        flow = HttpFlow(Door.DECORATOR, overrides, holds_transaction=not is_async)
        if is_async:

            @functools.wraps(view)
            async def async_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                if not take(request):
                    return await view(request, *args, **kwargs)
                return await flow.aguard(request, lambda: view(request, *args, **kwargs))

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(view)
            def sync_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                if not take(request):
                    return view(request, *args, **kwargs)
                return flow.guard(request, lambda: view(request, *args, **kwargs))

            wrapper = sync_wrapper
        setattr(wrapper, DOOR_ATTR, True)
        # Read by the OpenAPI schema (which methods it covers, whether a key is required).
        setattr(wrapper, FLOW_ATTR, flow)
        return wrapper  # type: ignore[no-any-return]

    if view is not None:
        return decorate(view)
    return decorate
