"""The ``run()`` lifecycle: one guard, :class:`RunFlow`, for functions, coroutines and jobs.

The first caller of a key runs the action; its return value (or exception) is stored
and every concurrent or later caller gets it back, or the same exception re-raised.
What is *not* an outcome releases the key instead, so the next call runs the action:
``should_ignore_error(exc)`` returning true, exceptions that are not ``Exception``
(``KeyboardInterrupt``, ``SystemExit``, asyncio cancellation), and whatever a job door
names as "not an outcome" (Celery's ``Retry``, ``Ignore``, ``Reject``). A return value
the serializer refuses is remembered as unreplayable, so the action never runs twice,
and :class:`ResultNotStored` carries the value back to this caller.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import durable, events
from ..engine import Claim, Engine, Found
from ..events import Door, Outcome, emit
from ..exceptions import NotReplayable, ResultNotStored
from ..options import RunOptions
from ..records import Kind, State
from ..runtime import get_engine
from ..steps import Flow, adrive, drive
from .refusals import refusal

T = TypeVar("T")


class RunFlow:
    """The ``run()`` lifecycle for one door (``run`` itself, Celery, Django Tasks)."""

    def __init__(
        self,
        door: Door = Door.RUN,
        not_outcomes: tuple[type[BaseException], ...] = (),
        *,
        engine: Engine | None = None,
    ) -> None:
        self.door = door
        self.not_outcomes = not_outcomes
        self._engine = engine

    @property
    def engine(self) -> Engine:
        """The engine this flow uses: the process's, unless one was given."""
        return self._engine if self._engine is not None else get_engine()

    # -- before the action ----------------------------------------------------------------

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, (str, bytes)) or not key:
            raise TypeError("run() needs a non-empty str or bytes key")

    def begin(
        self, key: str | bytes, options: RunOptions, started: float | None = None
    ) -> Claim | Found | None:
        """A claim (run the action), a stored outcome, or ``None`` (fail-open: run unprotected).

        ``started`` is when the call began (``time.monotonic()``): events carry the
        duration from it.
        """
        engine = self.engine
        return drive(engine.context, self._begin(engine, key, options, started))

    def _begin(
        self, engine: Engine, key: str | bytes, options: RunOptions, started: float | None
    ) -> Flow[Claim | Found | None]:
        self._check_key(key)
        started = time.monotonic() if started is None else started
        claim = engine.acquiring(
            Kind.RUN,
            self.door,
            options.scope,
            key,
            b"",
            lock_ttl=options.lock_ttl,
            wait_timeout=options.wait_timeout,
            conflict=options.conflict,
            outcome_unknown=options.outcome_unknown,
            ttl=options.ttl,
        )
        # Durable calls are blocking ones: arun() refuses durable=True.
        if options.durable:
            claim = durable.claiming(
                engine, claim, Kind.RUN, self.door, options.scope, key, b"", ttl=options.ttl
            )
        try:
            return (yield from claim)
        except Exception as exc:
            self._refused(key, options, exc, started)
            return None

    def _refused(
        self, key: str | bytes, options: RunOptions, exc: Exception, started: float
    ) -> None:
        """Report a refused claim and raise the caller's exception; returns for fail-open."""
        refused = refusal(exc, fail_open=options.fail_open, expose=True)
        if refused.outcome is not None:
            self._report(refused.outcome, key, options, started, **refused.extra)
        if refused.error is None:
            return
        if refused.error is exc:
            raise exc
        raise refused.error from exc

    def replay(
        self, key: str | bytes, found: Found, options: RunOptions, started: float | None = None
    ) -> Any:
        """The stored value, or the stored error raised again."""
        record = found.record
        if record.state is State.UNREPLAYABLE:
            self._report(Outcome.NOT_REPLAYABLE, key, options, started)
            raise NotReplayable(
                "The action ran for this key, but its result cannot be replayed: "
                + record.payload.decode("utf-8", "replace")
            )
        # Direct: every follower of a storm passes here.
        emit(found.outcome, self.door, options.scope, key, started=started, wait=found.waited)
        if record.state is State.ERROR:
            error = options.error_serializer.loads(record.payload)
            if options.on_error_replay is not None:
                options.on_error_replay(key, error)
            raise error
        value = options.value_serializer.loads(record.payload)
        if options.on_success_replay is not None:
            options.on_success_replay(key, value)
        return value

    # -- after the action -----------------------------------------------------------------

    def _is_outcome(self, exc: BaseException, options: RunOptions) -> bool:
        if not isinstance(exc, Exception) or isinstance(exc, self.not_outcomes):
            return False
        return options.should_ignore_error is None or not options.should_ignore_error(exc)

    def _error_plan(self, exc: BaseException, options: RunOptions) -> tuple[State, bytes] | None:
        return (
            (State.ERROR, options.error_serializer.dumps(exc))
            if self._is_outcome(exc, options)
            else None
        )

    def _value_plan(self, value: Any, options: RunOptions) -> tuple[State, bytes, str | None]:
        try:
            return State.DONE, options.value_serializer.dumps(value), None
        except (TypeError, ValueError) as exc:
            # Never run twice: remember that this key ran, even though we cannot replay it.
            reason = f"The result of type {type(value).__name__} could not be serialized: {exc}"
            return State.UNREPLAYABLE, reason.encode(), reason

    def _report(
        self,
        outcome: Outcome,
        key: str | bytes,
        options: RunOptions,
        started: float | None,
        **extra: Any,
    ) -> None:
        emit(outcome, self.door, options.scope, key, started=started, **extra)

    def failed(
        self,
        key: str | bytes,
        claim: Claim | None,
        options: RunOptions,
        exc: BaseException,
        started: float | None = None,
    ) -> None:
        """The action raised ``exc``: store it, or release the key when it is not an outcome."""
        drive(self.engine.context, self._failed(key, claim, options, exc, started))

    async def afailed(
        self,
        key: str | bytes,
        claim: Claim | None,
        options: RunOptions,
        exc: BaseException,
        started: float | None = None,
    ) -> None:
        """:meth:`failed` for coroutines."""
        await adrive(self.engine.context, self._failed(key, claim, options, exc, started))

    def _failed(
        self,
        key: str | bytes,
        claim: Claim | None,
        options: RunOptions,
        exc: BaseException,
        started: float | None,
    ) -> Flow[None]:
        if claim is None:
            return
        plan = self._error_plan(exc, options)
        engine = self.engine
        if plan is None:
            if (yield from engine.releasing(claim)):
                self._report(Outcome.RELEASED, key, options, started)
            return
        try:
            yield from engine.completing(claim, plan[0], plan[1], ttl=options.ttl)
        except ResultNotStored as critical:
            self._report(Outcome.NOT_STORED, key, options, started, detail=str(critical))
            critical.error = exc
            raise critical from exc
        self._report(Outcome.EXECUTED, key, options, started, state=State.ERROR.value)
        if options.on_action_error is not None:
            options.on_action_error(key, exc)

    def succeeded(
        self,
        key: str | bytes,
        claim: Claim | None,
        options: RunOptions,
        value: T,
        started: float | None = None,
        plan: tuple[State, bytes, str | None] | None = None,
    ) -> T:
        """The action returned ``value``: store it (``ResultNotStored`` if that failed).

        ``plan``: ``value`` already serialized (durable mode did, for its row).
        """
        return drive(
            self.engine.context, self._succeeded(key, claim, options, value, started, plan)
        )

    async def asucceeded(
        self,
        key: str | bytes,
        claim: Claim | None,
        options: RunOptions,
        value: T,
        started: float | None = None,
    ) -> T:
        """:meth:`succeeded` for coroutines."""
        flow = self._succeeded(key, claim, options, value, started, None)
        return await adrive(self.engine.context, flow)

    def _succeeded(
        self,
        key: str | bytes,
        claim: Claim | None,
        options: RunOptions,
        value: T,
        started: float | None,
        plan: tuple[State, bytes, str | None] | None,
    ) -> Flow[T]:
        if claim is None:
            return value
        state, payload, reason = plan if plan is not None else self._value_plan(value, options)
        try:
            yield from self.engine.completing(claim, state, payload, ttl=options.ttl)
        except ResultNotStored as critical:
            self._report(Outcome.NOT_STORED, key, options, started, detail=str(critical))
            critical.value = value
            raise
        self._report(Outcome.EXECUTED, key, options, started, state=state.value)
        if reason is not None:
            raise ResultNotStored(reason, value=value)
        if options.on_action_success is not None:
            options.on_action_success(key, value)
        return value

    # -- a whole call ---------------------------------------------------------------------

    def run(self, key: str | bytes, action: Callable[[], T], options: RunOptions) -> T:
        """Run ``action()`` at most once per key; see :func:`django_idempotency.run`."""
        with events.traced(self.door):
            started = time.monotonic()
            if options.durable:
                durable.refuse_open_transaction()
            got = self.begin(key, options, started)
            if isinstance(got, Found):
                return self.replay(key, got, options, started)  # type: ignore[no-any-return]
            try:
                plan = None
                if options.durable and got is not None:
                    value, plan = durable.run(
                        self.engine,
                        got,
                        action,
                        lambda value: self._value_plan(value, options),
                        ttl=options.ttl,
                    )
                else:
                    value = action()
            except durable.RowNotWritten as failed:
                # Not an outcome: the work rolled back; a retry finds the row that
                # refused this one, or runs.
                if self.engine.release(got):  # type: ignore[arg-type]
                    self._report(Outcome.RELEASED, key, options, started)
                raise failed.error from None
            except BaseException as exc:
                self.failed(key, got, options, exc, started)
                raise
            return self.succeeded(key, got, options, value, started, plan)

    async def arun(
        self, key: str | bytes, action: Callable[[], Awaitable[T]], options: RunOptions
    ) -> T:
        """Await ``action()`` at most once per key."""
        # One coroutine deep, the driver awaited here: each follower of a storm resumes
        # through every level on its way out.
        with events.traced(self.door):
            started = time.monotonic()
            engine = self.engine
            got = await adrive(engine.context, self._begin(engine, key, options, started))
            if isinstance(got, Found):
                return self.replay(key, got, options, started)  # type: ignore[no-any-return]
            try:
                value = await action()
            except BaseException as exc:
                await self.afailed(key, got, options, exc, started)
                raise
            return await self.asucceeded(key, got, options, value, started)
