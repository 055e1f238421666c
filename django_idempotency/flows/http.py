"""The HTTP lifecycle: one guard, :class:`HttpFlow`, with blocking and asyncio forms.

Before the view (:meth:`HttpFlow.begin`): the method is covered or the request passes;
the key is read from the header, else from a form's field (missing: pass, or 400 where
it is required; malformed: 400); the scope and fingerprint are computed; the engine
claims the key or finds its record (replay), a concurrent duplicate waits or is refused
(409), a reused key with another request is refused (422), a store that is down answers
503 (``fail_closed``) or lets the view run unprotected (``fail_open``).

After the view (:meth:`HttpFlow.finish`): the responses the ``store_responses`` policy
picks are stored (2xx-4xx by default), the others release the key; streaming and
oversized responses are remembered as not replayable. Whether to store now or after the
database commits is decided here once, for every door: inside an atomic block the
response is stored on commit, and the key is released if the response is closed without
one (rollback).
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, transaction
from django.http import HttpResponse, HttpResponseBase

from .. import durable, events
from ..engine import Claim, Engine, Found
from ..events import Door, Outcome, Trace, emit
from ..exceptions import (
    InvalidKey,
    KeyRequired,
    NotReplayable,
    ResultNotStored,
)
from ..http import (
    SKIPPED_HEADERS,
    django_request,
    form_key,
    parse_key,
    problem_response,
    rendered,
)
from ..options import NONE, HttpOptions, Overrides
from ..records import Kind, Record, State, decode_http, encode_http
from ..runtime import get_engine
from ..steps import Flow, adrive, drive
from .refusals import refusal


@dataclass(eq=False, slots=True)
class Ticket:
    """A covered request with its key. Once the key is claimed (the only way a ticket
    reaches a door) the view runs, and :meth:`HttpFlow.finish` or ``abort`` follows."""

    options: HttpOptions
    request: Any
    scope: str
    key: str
    fingerprint: bytes
    started: float
    claim: Claim = field(init=False)
    #: The request's trace, while a tracing observer is installed.
    trace: Trace | None = None


@dataclass(frozen=True)
class Begin:
    """What :meth:`HttpFlow.begin` decided.

    Answer with ``response`` (a replay or a problem), or run the view under ``ticket``;
    both ``None``: the request is not covered, run the view unprotected.
    """

    response: HttpResponseBase | None = None
    ticket: Ticket | None = None


PASS = Begin()

_current: ContextVar[Ticket | None] = ContextVar("idempotency_ticket", default=None)


def request_key(name: str = "") -> str:
    """A stable key derived from the protected request's scope, key and ``name``.

    Inside a view run under an idempotency key, hand it to the work the view enqueues
    (a Celery task id, a ``run()`` key): a view run again after a crash (the documented
    at-least-once case) then enqueues the same key, and the job runs once. It is a UUID
    string, so it fits wherever an id does. Outside a protected request (no key was sent,
    or the view is not covered) it raises ``LookupError``: there is nothing stable to
    derive it from.
    """
    ticket = _current.get()
    if ticket is None:
        raise LookupError(
            "request_key() needs a request protected by an Idempotency-Key "
            "(inside the view, after the key was claimed)"
        )
    parts = [ticket.scope.encode(), ticket.key.encode(), name.encode()]
    digest = hashlib.blake2b(
        b"".join(b"%d:%b" % (len(p), p) for p in parts), digest_size=16, person=b"request_key"
    ).digest()
    return str(uuid.UUID(bytes=digest, version=5))


#: What to store for a response: its state, payload and status.
_Plan = tuple[State, bytes, int]


def stored_fingerprint(value: str | bytes) -> bytes:
    """A fingerprint function's value as a record keeps it (bytes; a long one digested)."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    # The record keeps a fingerprint of at most 255 bytes; a long one is digested.
    return raw if len(raw) <= 32 else hashlib.blake2b(raw, digest_size=16).digest()


def open_transactions() -> list[str]:
    """Database aliases inside an atomic block opened by the app (not by a TestCase)."""
    return [
        conn.alias
        for conn in connections.all(initialized_only=True)
        if conn.in_atomic_block
        and not all(getattr(block, "_from_testcase", False) for block in conn.atomic_blocks)
    ]


def replay_response(record: Record, replay_header: str) -> HttpResponse:
    """The stored response again: same status, headers and body, marked as a replay."""
    headers, body = decode_http(record.payload)
    fields = dict(headers)
    fields[replay_header] = "true"
    # Given every header at once, the response validates them in one pass; setting
    # them one by one costs twice as much, and a replay is this and one round trip.
    response = HttpResponse(body, status=record.status or 200, headers=fields)
    if not any(name.lower() == "content-type" for name in fields):
        del response["Content-Type"]  # the view sent none: neither does its replay
    return response


class HttpFlow:
    """The HTTP lifecycle for one door (and one view's overrides)."""

    def __init__(
        self,
        door: Door,
        overrides: Overrides = NONE,
        *,
        engine: Engine | None = None,
        holds_transaction: bool = False,
    ) -> None:
        self.door = door
        self.overrides = overrides
        self._engine = engine
        self.holds_transaction = holds_transaction

    def is_durable(self, options: HttpOptions) -> bool:
        """Whether durable mode applies: asked for, and this door holds the view's
        transaction (the decorator on a sync view and the DRF mixin do; the middleware
        and async views cannot, so ``DURABLE`` leaves them as they are)."""
        return options.durable and self.holds_transaction

    @property
    def engine(self) -> Engine:
        """The engine this flow uses: the process's, unless one was given."""
        return self._engine if self._engine is not None else get_engine()

    # -- before the view ------------------------------------------------------------------

    def _prepare(self, request: Any) -> Ticket | Begin:
        options = self.overrides.http()
        http_request = django_request(request)
        if http_request.method not in options.methods:
            return PASS
        started = time.monotonic()
        # META directly: request.headers builds a dict of every header on first use.
        raw = http_request.META.get(options.header_meta_key)
        if raw is None:
            # A plain HTML form cannot send a header: its key is a field of the body.
            raw = form_key(http_request, options.form_field)
        if raw is None:
            if not options.required:
                return PASS
            emit(Outcome.KEY_REQUIRED, self.door, "", "", started=started, request=request)
            return Begin(
                response=problem_response(
                    KeyRequired(
                        f"This endpoint requires an {options.header} header "
                        f"(or, in a form, an {options.form_field} field)."
                    ),
                    options.problem_type_base,
                )
            )
        try:
            key = parse_key(raw, max_length=options.max_key_length, key_format=options.key_format)
        except InvalidKey as exc:
            emit(Outcome.INVALID_KEY, self.door, "", raw, started=started, request=request)
            return Begin(response=problem_response(exc, options.problem_type_base))
        return Ticket(
            options,
            request,
            str(options.scope(request)),
            key,
            stored_fingerprint(options.fingerprint(request)),
            started,
        )

    def begin(self, request: Any) -> Begin:
        """Everything before the view runs."""
        engine = self.engine
        return drive(engine.context, self._begin(request, engine))

    async def abegin(self, request: Any) -> Begin:
        """:meth:`begin` for the asyncio stack: no thread, no connection held while waiting."""
        engine = self.engine
        return await adrive(engine.context, self._begin(request, engine))

    def _begin(self, request: Any, engine: Engine) -> Flow[Begin]:
        ticket = self._prepare(request)
        if isinstance(ticket, Begin):
            return ticket
        o = ticket.options
        trace = events.open_trace(self.door)
        with events.active(trace):
            claim = engine.acquiring(
                Kind.HTTP,
                self.door,
                ticket.scope,
                ticket.key,
                ticket.fingerprint,
                lock_ttl=o.lock_ttl,
                wait_timeout=o.wait_timeout,
                conflict=o.conflict,
                outcome_unknown=o.outcome_unknown,
                ttl=o.ttl,
            )
            if self.is_durable(o):
                claim = durable.claiming(
                    engine,
                    claim,
                    Kind.HTTP,
                    self.door,
                    ticket.scope,
                    ticket.key,
                    ticket.fingerprint,
                    ttl=o.ttl,
                )
            try:
                got = yield from claim
            except Exception as exc:
                return self._refused(ticket, exc)
            return self._begun(ticket, got, trace)

    def _refused(self, ticket: Ticket, exc: Exception) -> Begin:
        """The answer for each way the claim can be refused."""
        options = ticket.options
        refused = refusal(exc, fail_open=options.fail_open, expose=False)
        if refused.outcome is not None:
            self._report(ticket, refused.outcome, **refused.extra)
        if refused.error is None:
            return PASS
        return Begin(response=problem_response(refused.error, options.problem_type_base))

    def _begun(self, ticket: Ticket, got: Claim | Found, trace: Trace | None) -> Begin:
        if isinstance(got, Found):
            return Begin(
                response=self.replay(
                    ticket.request, ticket.scope, ticket.key, ticket.started, got, ticket.options
                )
            )
        ticket.claim, ticket.trace = got, trace
        _current.set(ticket)
        return Begin(ticket=ticket)

    def replay(
        self,
        request: Any,
        scope: str,
        key: str,
        started: float,
        found: Found,
        options: HttpOptions,
    ) -> HttpResponse:
        """The answer for a final record: its response again, or why it cannot be replayed."""
        record = found.record
        if record.state is State.UNREPLAYABLE:
            emit(Outcome.NOT_REPLAYABLE, self.door, scope, key, request=request)
            return problem_response(
                NotReplayable(
                    "The first request with this key was processed, but its response cannot "
                    f"be replayed: {record.payload.decode('utf-8', 'replace')}"
                ),
                options.problem_type_base,
            )
        emit(
            found.outcome,
            self.door,
            scope,
            key,
            started=started,
            wait=found.waited,
            request=request,
        )
        return replay_response(record, options.replay_header)

    # -- after the view -------------------------------------------------------------------

    def _plan(self, ticket: Ticket, response: HttpResponseBase) -> _Plan | None:
        """What to store for ``response``: ``(state, payload, status)``, or ``None`` to release."""
        status = response.status_code
        if not response.streaming:
            rendered(response)  # a policy that reads the response sees it as it is sent
        if not ticket.options.store_responses(response):
            return None
        if response.streaming:
            return State.UNREPLAYABLE, b"it was a streaming response.", status
        assert isinstance(response, HttpResponse)
        content = response.content
        limit = ticket.options.max_body_bytes
        if len(content) > limit:
            reason = f"its body was larger than {limit} bytes."
            return State.UNREPLAYABLE, reason.encode(), status
        headers = [(k, v) for k, v in response.items() if k.lower() not in SKIPPED_HEADERS]
        return State.DONE, encode_http(headers, content), status

    def _deferred(self, ticket: Ticket, response: HttpResponseBase) -> bool:
        """Defer storing until the open transactions commit; True when it was deferred.

        Django calls the response's closers when the server closes it, after the
        outermost atomic block has committed or rolled back: without a commit by then,
        the key is released. Asyncio views never run inside an atomic block.
        """
        aliases = open_transactions()
        if not aliases:
            return False
        kept_as_row = self.is_durable(ticket.options)
        # Durable: the row and the Redis record are the one plan, made once, now. A
        # response that is released rather than stored (a 5xx) has no plan and no row:
        # its retry runs again, as without durable mode.
        plan = self._plan(ticket, response) if kept_as_row else None
        if plan is not None:
            durable.write(self.engine, ticket.claim, plan, ttl=ticket.options.ttl, aliases=aliases)
        waiting = set(aliases)

        def committed(alias: str) -> None:
            waiting.discard(alias)
            if not waiting:
                if not kept_as_row:
                    self.settle(ticket, response)
                    return
                engine = self.engine
                drive(engine.context, self._settling(engine, ticket, lambda: plan))

        for alias in aliases:
            transaction.on_commit(functools.partial(committed, alias), using=alias)
        response._resource_closers.append(lambda: self.abort(ticket))  # type: ignore[attr-defined]
        return True

    def own_transaction(self, ticket: Ticket) -> transaction.Atomic | None:
        """The transaction the door opens for a durable view that runs outside one.

        The work and its stored response then commit or roll back together. ``None``
        when not durable, or when the view already runs in a transaction
        (``ATOMIC_REQUESTS``'s, or its caller's). The decorator runs the view inside it;
        the DRF mixin, called before and after the view, enters it after the claim and
        leaves it after :meth:`finish` (commit) or on an error (rollback).
        """
        if not self.is_durable(ticket.options) or open_transactions():
            return None
        return durable.own_transaction()

    def finish(self, ticket: Ticket, response: HttpResponseBase) -> HttpResponseBase:
        """Store or release after the view returned (on commit, inside a transaction)."""
        _current.set(None)
        if not self._deferred(ticket, response):
            self.settle(ticket, response)
        return response

    async def afinish(self, ticket: Ticket, response: HttpResponseBase) -> HttpResponseBase:
        """:meth:`finish` for the asyncio stack."""
        _current.set(None)
        if not self._deferred(ticket, response):
            await self.asettle(ticket, response)
        return response

    def settle(self, ticket: Ticket, response: HttpResponseBase) -> None:
        """Store the response for replays, or release the key; once per ticket."""
        engine = self.engine
        drive(engine.context, self._settling(engine, ticket, lambda: self._plan(ticket, response)))

    async def asettle(self, ticket: Ticket, response: HttpResponseBase) -> None:
        """:meth:`settle` for the asyncio stack."""
        engine = self.engine
        settling = self._settling(engine, ticket, lambda: self._plan(ticket, response))
        await adrive(engine.context, settling)

    def _settling(
        self, engine: Engine, ticket: Ticket, plan: Callable[[], _Plan | None]
    ) -> Flow[None]:
        with events.active(ticket.trace, last=True):
            planned = plan()
            if planned is None:
                self._released(ticket, (yield from engine.releasing(ticket.claim)))
                return
            state, payload, status = planned
            try:
                record = yield from engine.completing(
                    ticket.claim, state, payload, ttl=ticket.options.ttl, status=status
                )
            except ResultNotStored as exc:
                # The client still gets the true response; only later replays are at risk.
                self._report(ticket, Outcome.NOT_STORED, detail=str(exc))
                return
            if record is not None:
                self._report(ticket, Outcome.EXECUTED, state=record.state.value)

    def abort(self, ticket: Ticket) -> None:
        """The view raised (or its transaction rolled back): release the key for a retry."""
        drive(self.engine.context, self._aborting(ticket))

    async def aabort(self, ticket: Ticket) -> None:
        """:meth:`abort` for the asyncio stack."""
        await adrive(self.engine.context, self._aborting(ticket))

    def _aborting(self, ticket: Ticket) -> Flow[None]:
        _current.set(None)
        with events.active(ticket.trace, last=True):
            self._released(ticket, (yield from self.engine.releasing(ticket.claim)))

    def _report(self, ticket: Ticket, outcome: Outcome, **extra: Any) -> None:
        emit(
            outcome,
            self.door,
            ticket.scope,
            ticket.key,
            started=ticket.started,
            request=ticket.request,
            **extra,
        )

    def _released(self, ticket: Ticket, released: bool) -> None:
        if released:
            self._report(ticket, Outcome.RELEASED)

    # -- a whole view call (the decorator) ------------------------------------------------

    def guard(self, request: Any, view: Callable[[], HttpResponseBase]) -> HttpResponseBase:
        """Run ``view()`` under the lifecycle: begin, the view, then finish or abort."""
        begun = self.begin(request)
        if begun.ticket is None:
            return begun.response or view()
        ticket = begun.ticket
        try:
            with events.active(ticket.trace, end_on_error=False):
                atomic = self.own_transaction(ticket)
                if atomic is not None:
                    with atomic:
                        return self.finish(ticket, view())
                response = view()
        except BaseException:
            self.abort(ticket)
            raise
        return self.finish(ticket, response)

    async def aguard(
        self, request: Any, view: Callable[[], Awaitable[HttpResponseBase]]
    ) -> HttpResponseBase:
        """:meth:`guard` for an async view."""
        begun = await self.abegin(request)
        if begun.ticket is None:
            return begun.response or await view()
        try:
            with events.active(begun.ticket.trace, end_on_error=False):
                response = await view()
        except BaseException:
            await self.aabort(begun.ticket)
            raise
        return await self.afinish(begun.ticket, response)
