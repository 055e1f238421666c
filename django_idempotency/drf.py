"""Door 3: ``IdempotentMixin`` for DRF views and viewsets (imports DRF).

DRF authenticates inside the view, after every middleware, so this door claims the
key in ``initial()`` (after authentication, so the default scope is DRF's user) and
stores the rendered response in ``finalize_response()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import HttpResponseBase
from rest_framework.request import Request
from rest_framework.response import Response

from .doors import DOOR_ATTR, take
from .service import Ticket, get_service


class _Answer(Exception):
    """Carries a replay or problem response out of ``initial()``."""

    def __init__(self, response: HttpResponseBase) -> None:
        super().__init__("idempotency answer")
        self.response = response


class IdempotentMixin:
    """Make a DRF view or viewset idempotent.

    Class attributes (``None`` = the ``settings.IDEMPOTENCY`` value):

    - ``idempotency_methods``: HTTP methods covered.
    - ``idempotency_actions``: viewset actions covered (e.g. ``{"create"}``); ``None``
      covers every action whose method is covered.
    - ``idempotency_required``: refuse covered requests without a key (400).
    - ``idempotency_options``: further overrides: ``ttl``, ``lock_ttl``,
      ``wait_timeout``, ``conflict``, ``scope``, ``fingerprint``.
    """

    idempotency_methods: Iterable[str] | None = None
    idempotency_actions: Iterable[str] | None = None
    idempotency_required: bool | None = None
    idempotency_options: dict[str, Any] = {}

    _idempotency_ticket: Ticket | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        setattr(cls, DOOR_ATTR, True)

    def _idempotency_covers(self) -> bool:
        actions = self.idempotency_actions
        return actions is None or getattr(self, "action", None) in set(actions)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """After DRF's authentication, permissions and throttling: claim the key."""
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if not self._idempotency_covers() or not take(request):
            return
        service = get_service()
        methods = self.idempotency_methods
        policy = service.policy(
            methods=None if methods is None else frozenset(m.upper() for m in methods),
            required=self.idempotency_required,
            **self.idempotency_options,
        )
        begin = service.begin(request, policy)
        if begin.response is not None:
            raise _Answer(begin.response)
        self._idempotency_ticket = begin.ticket

    def handle_exception(self, exc: Exception) -> HttpResponseBase:
        """Send replays and problems as they are; release the key on unhandled errors."""
        if isinstance(exc, _Answer):
            return exc.response
        try:
            return super().handle_exception(exc)  # type: ignore[misc,no-any-return]
        except BaseException:
            ticket, self._idempotency_ticket = self._idempotency_ticket, None
            if ticket is not None:
                get_service().abort(ticket)
            raise

    def finalize_response(
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        """Render the response and store it (after the transaction commits, if any)."""
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        ticket, self._idempotency_ticket = self._idempotency_ticket, None
        if ticket is None:
            return response
        if isinstance(response, Response):
            response.render()
        return get_service().finish(ticket, response)
