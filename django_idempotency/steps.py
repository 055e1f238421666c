"""What a lifecycle asks for, and the two drivers that do it: one blocking, one asyncio.

The engine's rules are written once, as generators that *yield* the I/O they need (a
:class:`Call` on the store, a :class:`Listen` for a completion, a :class:`Follow` of a
local flight, a :class:`Pause`) and are sent back its result, or have its exception
thrown in at the yield. They never perform I/O themselves, so the blocking doors and
the asyncio doors run the very same rules: :func:`drive` performs each step with
blocking calls, :func:`adrive` awaits them, and nothing else differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from . import events
from .events import StoreOp

if TYPE_CHECKING:
    from .flights import Flight, Flights
    from .stores.base import Notifier, Slot, Store

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One store operation: ``method(*args)`` on the store, timed as ``op``."""

    op: StoreOp
    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Listen:
    """Wait up to ``timeout`` s for the owner of ``slot`` to finish; sends back a bool."""

    slot: Slot
    position: tuple[int, int]
    timeout: float


@dataclass(frozen=True, slots=True)
class Follow:
    """Wait up to ``timeout`` s for a local flight's outcome (``None`` when it ran out)."""

    flight: Flight
    timeout: float


@dataclass(frozen=True, slots=True)
class Pause:
    """Let ``seconds`` pass (a busy pool's back-off)."""

    seconds: float


Step: TypeAlias = Call | Listen | Follow | Pause
#: A lifecycle: yields steps, is sent their results, returns its outcome.
Flow: TypeAlias = Generator[Step, Any, T]


class Context:
    """What the drivers perform steps with: the engine's store, notifier and flights."""

    __slots__ = ("flights", "notifier", "store")

    def __init__(self, store: Store, flights: Flights) -> None:
        self.store = store
        self.notifier: Notifier = store.notifier
        self.flights = flights


def drive(context: Context, flow: Flow[T]) -> T:
    """Run ``flow`` to its end, performing each step with blocking calls."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            if isinstance(step, Call):
                with events.timed(step.op):
                    result = getattr(context.store, step.method)(*step.args)
            elif isinstance(step, Listen):
                result = context.notifier.wait(step.slot, step.position, step.timeout)
            elif isinstance(step, Follow):
                result = context.flights.wait(step.flight, step.timeout)
            else:
                time.sleep(step.seconds)
        except BaseException as exc:  # thrown into the flow at its yield, like a return
            error = exc


async def adrive(context: Context, flow: Flow[T]) -> T:
    """Run ``flow`` to its end, awaiting each step: no thread, no connection held waiting."""
    store = context.store.aio()
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            if isinstance(step, Call):
                with events.timed(step.op):
                    result = await getattr(store, step.method)(*step.args)
            elif isinstance(step, Listen):
                result = await context.notifier.await_outcome(
                    step.slot, step.position, step.timeout
                )
            elif isinstance(step, Follow):
                result = await context.flights.await_outcome(step.flight, step.timeout)
            else:
                await asyncio.sleep(step.seconds)
        except BaseException as exc:
            error = exc
