"""Door 1: ``IdempotencyMiddleware`` covers every view of the project.

Place it after ``AuthenticationMiddleware`` (the default scope is the user). It
works in WSGI and ASGI stacks, and steps aside for views with their own door
(``@idempotent_view``, the DRF mixin) or marked ``@idempotency_exempt``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from .doors import take, view_has_own_door
from .service import Ticket, get_service, in_thread

_TICKET = "_idempotency_ticket"


class IdempotencyMiddleware:
    """Claims the key before the view, replays or refuses duplicates, stores after."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
            # Django picks process_view up from the instance; an async one runs the
            # blocking Redis work in a worker thread instead of the shared sync thread.
            self.process_view = self._aprocess_view  # type: ignore[method-assign,assignment]

    def __call__(self, request: HttpRequest) -> Any:
        """Run the rest of the stack, then store the response of a claimed request."""
        if self.async_mode:
            return self.__acall__(request)
        response = self.get_response(request)
        ticket: Ticket | None = request.__dict__.pop(_TICKET, None)
        if ticket is not None:
            response = get_service().finish(ticket, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await self.get_response(request)
        ticket: Ticket | None = request.__dict__.pop(_TICKET, None)
        if ticket is not None:
            await in_thread(get_service().settle, ticket, response)
        return response

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponseBase | None:
        """Claim the key, or answer with a replay or a problem without running the view."""
        if view_has_own_door(view_func) or not take(request):
            return None
        service = get_service()
        begin = service.begin(request, service.policy())
        if begin.ticket is not None:
            request.__dict__[_TICKET] = begin.ticket
        return begin.response

    async def _aprocess_view(
        self, request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponseBase | None:
        # The class attribute: the instance's process_view is this coroutine.
        return await in_thread(
            IdempotencyMiddleware.process_view, self, request, view_func, args, kwargs
        )

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """The view raised: release the key so the client may retry."""
        ticket: Ticket | None = request.__dict__.pop(_TICKET, None)
        if ticket is not None:
            get_service().abort(ticket)
