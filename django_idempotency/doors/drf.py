"""``IdempotentMixin`` for DRF views and viewsets (imports DRF).

DRF authenticates inside the view, after every middleware, so this door claims the key
in ``initial()`` (after authentication, permissions and throttling, so the default scope
is DRF's user) and stores the rendered response in ``finalize_response()``. Its class
attributes are validated when the class is created.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from django.http import HttpResponseBase
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from ..events import Door
from ..exceptions import IdempotencyError
from ..flows.http import HttpFlow, Ticket
from ..http import problem_document, problem_of
from ..options import InvalidOption, Overrides, attributes, keyed
from . import DOOR_ATTR, take


class _Answer(Exception):
    """Carries a replay or problem response out of ``initial()``."""

    def __init__(self, response: HttpResponseBase) -> None:
        super().__init__("idempotency answer")
        self.response = response


class IdempotencyAPIException(APIException):  # type: ignore[misc]  # DRF ships no types
    """A refusal of the mixin (400, 409, 422, 503, ...) as a DRF exception.

    Raised instead of answering problem+json when ``IDEMPOTENCY["DRF_EXCEPTION_HANDLER"]``
    is true, so the project's ``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` gives it the
    project's envelope. ``detail`` and ``status_code`` are the problem's, ``wait`` its
    ``Retry-After`` (DRF's default handler sends it), ``problem`` the problem+json members
    and ``error`` the :class:`~django_idempotency.exceptions.IdempotencyError` itself.
    """

    def __init__(self, error: IdempotencyError, type_base: str) -> None:
        super().__init__(detail=error.detail, code=error.type_slug)
        self.status_code = error.status
        self.wait = error.retry_after
        self.error = error
        self.problem = problem_document(error, type_base)


#: The actions DRF's model mixins route to; a viewset has those it defines.
_ROUTED_ACTIONS = ("list", "create", "retrieve", "update", "partial_update", "destroy")


def _known_actions(cls: type, actions: frozenset[str], label: str) -> frozenset[str]:
    """``actions``, once each is known to be an action of viewset ``cls``.

    A name that matches no action would leave its requests unprotected, silently: it
    is refused when the class is created, with the closest action's name.
    """
    extra = getattr(cls, "get_extra_actions", None)
    if extra is None:
        raise InvalidOption(
            f"{label}.idempotency_actions applies to viewsets only: {label} is not one, so "
            "no request has an action and none would be protected (use "
            "idempotency_methods to choose what is covered)"
        )
    known = {name for name in _ROUTED_ACTIONS if callable(getattr(cls, name, None))}
    known |= {action.__name__ for action in extra()}
    for name in sorted(actions - known):
        close = difflib.get_close_matches(name, known, n=1)
        raise InvalidOption(
            f"{label}.idempotency_actions names {name!r}, which is not an action of "
            f"{label}"
            + (f"; did you mean {close[0]!r}?" if close else "")
            + (f" (its actions: {', '.join(sorted(known))})" if known else " (it has none)")
        )
    return actions


class IdempotentMixin:
    """Make a DRF view or viewset idempotent.

    Class attributes (``None`` = the ``settings.IDEMPOTENCY`` value):

    - ``idempotency_methods``: HTTP methods covered.
    - ``idempotency_actions``: viewset actions covered (e.g. ``{"create"}``); ``None``
      covers every action whose method is covered.
    - ``idempotency_required``: refuse covered requests without a key (400).
    - ``idempotency_options``: further options: ``ttl``, ``lock_ttl``, ``wait_timeout``,
      ``conflict``, ``scope``, ``fingerprint``, ``durable`` (the response is also
      written to the database in the view's transaction: ``ATOMIC_REQUESTS``'s, or one
      the mixin opens from the claim to the response), ``store_responses``,
      ``outcome_unknown``. An option given both here and as an attribute is refused.

    Refusals answer problem+json, or with ``IDEMPOTENCY["DRF_EXCEPTION_HANDLER"]`` are
    raised as :class:`IdempotencyAPIException` for the project's exception handler.
    """

    idempotency_methods: Iterable[str] | None = None
    idempotency_actions: Iterable[str] | None = None
    idempotency_required: bool | None = None
    idempotency_options: Mapping[str, Any] = {}

    _idempotency_flow: ClassVar[HttpFlow] = HttpFlow(Door.DRF)
    _idempotency_actions: ClassVar[frozenset[str] | None] = None
    _idempotency_ticket: Ticket | None = None
    _idempotency_atomic: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        setattr(cls, DOOR_ATTR, True)
        label = cls.__qualname__
        options = cls.idempotency_options
        if not isinstance(options, Mapping):
            raise InvalidOption(
                f"{label}.idempotency_options must be a dict of options, got {options!r}"
            )
        merged = Overrides.validate(options, "http", keyed(f"{label}.idempotency_options"))
        from_attributes = Overrides.validate(
            {"methods": cls.idempotency_methods, "required": cls.idempotency_required},
            "http",
            attributes(label, "idempotency_"),
        )
        for name in sorted(set(merged.values) & set(from_attributes.values)):
            # Two values for one option: refuse rather than let one silently win.
            raise InvalidOption(
                f'{label} sets {name} twice: idempotency_{name} and idempotency_options["'
                f'{name}"]; keep one'
            )
        cls._idempotency_flow = HttpFlow(
            Door.DRF,
            Overrides({**merged.values, **from_attributes.values}),
            holds_transaction=True,
        )
        actions = cls.idempotency_actions
        if actions is not None and (
            isinstance(actions, str) or not all(isinstance(a, str) for a in actions)
        ):
            raise InvalidOption(
                f"{label}.idempotency_actions must be a set of action names, got {actions!r}"
            )
        cls._idempotency_actions = (
            None if actions is None else _known_actions(cls, frozenset(actions), label)
        )

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """After DRF's authentication, permissions and throttling: claim the key."""
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        actions = self._idempotency_actions
        if actions is not None and getattr(self, "action", None) not in actions:
            return
        if not take(request):
            return
        begun = self._idempotency_flow.begin(request)
        if begun.response is not None:
            problem = problem_of(begun.response)
            if problem is not None:
                options = self._idempotency_flow.overrides.http()
                if options.drf_exception_handler:
                    raise IdempotencyAPIException(problem, options.problem_type_base)
            raise _Answer(begun.response)
        self._idempotency_ticket = begun.ticket
        if begun.ticket is not None:
            atomic = self._idempotency_flow.own_transaction(begun.ticket)
            if atomic is not None:
                atomic.__enter__()
                self._idempotency_atomic = atomic

    def handle_exception(self, exc: Exception) -> HttpResponseBase:
        """Send replays and problems as they are; release the key on unhandled errors."""
        if isinstance(exc, _Answer):
            return exc.response
        try:
            return super().handle_exception(exc)  # type: ignore[misc,no-any-return]
        except BaseException as error:
            ticket, self._idempotency_ticket = self._idempotency_ticket, None
            atomic, self._idempotency_atomic = self._idempotency_atomic, None
            if atomic is not None:
                atomic.__exit__(type(error), error, error.__traceback__)
            if ticket is not None:
                self._idempotency_flow.abort(ticket)
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
        atomic, self._idempotency_atomic = self._idempotency_atomic, None
        if atomic is None:
            return self._idempotency_flow.finish(ticket, response)
        # The mixin's own transaction: the row is written in it, then it commits, and
        # the response is stored in Redis on that commit.
        try:
            response = self._idempotency_flow.finish(ticket, response)
        except BaseException as error:
            atomic.__exit__(type(error), error, error.__traceback__)
            raise
        atomic.__exit__(None, None, None)
        return response
