"""``IdempotencyMiddleware``: covers every view of the project.

Place it after ``AuthenticationMiddleware`` (the default scope is the user). One class
serves WSGI and ASGI stacks: under ASGI every step is a coroutine on ``redis.asyncio``.
It steps aside for views with their own door (``@idempotent_view``, the DRF mixin) or
marked ``@idempotency_exempt``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from ..events import Door
from ..flows.http import HttpFlow, Ticket
from ..lease import require_renewal
from . import take, view_has_own_door

_TICKET = "_idempotency_ticket"


class IdempotencyMiddleware:
    """Claims the key before the view, replays or refuses duplicates, stores after."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        # Refused when the server is loaded, not at the first long request.
        require_renewal()
        self.get_response = get_response
        self.flow = HttpFlow(Door.MIDDLEWARE)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
            # Django picks these hooks up from the instance: coroutines, so no step of
            # the lifecycle needs a thread.
            self.process_view = self._aprocess_view  # type: ignore[method-assign,assignment]
            self.process_exception = self._aprocess_exception  # type: ignore[method-assign,assignment]

    def __call__(self, request: HttpRequest) -> Any:
        """Run the rest of the stack, then store the response of a claimed request."""
        if self.async_mode:
            return self.__acall__(request)
        response = self.get_response(request)
        ticket: Ticket | None = request.__dict__.pop(_TICKET, None)
        if ticket is not None:
            response = self.flow.finish(ticket, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await self.get_response(request)
        ticket: Ticket | None = request.__dict__.pop(_TICKET, None)
        if ticket is not None:
            response = await self.flow.afinish(ticket, response)
        return response

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponseBase | None:
        """Claim the key, or answer with a replay or a problem without running the view."""
        if view_has_own_door(view_func) or not take(request):
            return None
        begun = self.flow.begin(request)
        if begun.ticket is not None:
            request.__dict__[_TICKET] = begun.ticket
        return begun.response

    async def _aprocess_view(
        self, request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponseBase | None:
        if view_has_own_door(view_func) or not take(request):
            return None
        begun = await self.flow.abegin(request)
        if begun.ticket is not None:
            request.__dict__[_TICKET] = begun.ticket
        return begun.response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """The view raised: release the key so the client may retry."""
        ticket: Ticket | None = request.__dict__.pop(_TICKET, None)
        if ticket is not None:
            self.flow.abort(ticket)

    async def _aprocess_exception(self, request: HttpRequest, exception: Exception) -> None:
        ticket: Ticket | None = request.__dict__.pop(_TICKET, None)
        if ticket is not None:
            await self.flow.aabort(ticket)
