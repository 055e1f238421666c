"""Local single-flight: how followers of one flight are woken, timed out and answered.

The followers of a flight may wait in the loop that lands it, in other threads' loops,
or as threads; each gets the outcome, each times out at its own deadline, and through
``arun()`` each gets a value of its own and reports its own outcome. No Redis: the
end-to-end test uses the in-memory store.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from typing import Any

import pytest

from django_idempotency import events
from django_idempotency.conf import get_settings
from django_idempotency.engine import Engine
from django_idempotency.events import Door, Event, StoreOp
from django_idempotency.flights import Flights
from django_idempotency.flows.run import RunFlow
from django_idempotency.runtime import sealer_for
from django_idempotency.stores.memory import MemoryStore

pytestmark = pytest.mark.no_redis


def test_followers_in_the_landing_loop_in_another_loop_and_in_a_thread_all_get_the_outcome():
    flights = Flights()
    joined = flights.join(b"rid", b"fp")
    assert joined is not None
    flight, leading = joined
    assert leading
    registered = threading.Event()
    elsewhere: list[Any] = []
    threaded: list[Any] = []

    async def other_loop() -> None:
        waiting = flights.await_outcome(flight, 30)
        registered.set()
        elsewhere.append(await waiting)

    other = threading.Thread(target=asyncio.run, args=(other_loop(),))
    follower = threading.Thread(target=lambda: threaded.append(flights.wait(flight, 30)))
    other.start()
    follower.start()

    async def landing_loop() -> list[Any]:
        here = [flights.await_outcome(flight, 30) for _ in range(3)]
        await asyncio.get_running_loop().run_in_executor(None, registered.wait)
        flights.land(flight, "outcome")
        return list(await asyncio.gather(*here))

    assert asyncio.run(landing_loop()) == ["outcome"] * 3
    other.join(30)
    follower.join(30)
    assert elsewhere == ["outcome"] and threaded == ["outcome"]


def test_asyncio_followers_time_out_each_at_its_own_deadline():
    flights = Flights()
    joined = flights.join(b"rid", b"fp")
    assert joined is not None
    flight = joined[0]

    async def main() -> None:
        patient = flights.await_outcome(flight, 30)
        # Shorter deadlines than the one already timed, in either order.
        hasty = flights.await_outcome(flight, 0.05)
        prompt = flights.await_outcome(flight, 0.02)
        assert await prompt is None
        assert await hasty is None
        assert not patient.done()
        flights.land(flight, "outcome")
        assert await patient == "outcome"

    asyncio.run(main())


class _WaitCounter:
    """Counts the followers that started waiting; records every event."""

    def __init__(self, followers: int) -> None:
        self.followers = followers
        self.waiting = 0
        self.all_waiting = asyncio.Event()
        self.events: list[Event] = []

    def event(self, event: Event) -> None:
        self.events.append(event)

    def store_op(self, op: StoreOp, seconds: float) -> None:
        return None

    def span(self, name: str, door: Door | None) -> contextlib.AbstractContextManager[Any]:
        if name == "wait":
            self.waiting += 1
            if self.waiting == self.followers:
                self.all_waiting.set()
        return contextlib.nullcontext()


def test_arun_followers_each_get_a_value_of_their_own_and_report_waiting():
    from django_idempotency.api import run_options

    engine = Engine(MemoryStore("flights"), sealer_for(get_settings()), flights=Flights())
    flow = RunFlow(Door.RUN, engine=engine)
    options = run_options({"lock_ttl": 5, "wait_timeout": 10}, "run").run()
    callers = 20
    counter = _WaitCounter(callers - 1)
    ran: list[int] = []

    async def action() -> dict[str, list[int]]:
        ran.append(1)
        await counter.all_waiting.wait()  # every duplicate follows this flight
        return {"items": [1, 2]}

    async def main() -> list[Any]:
        return await asyncio.gather(*(flow.arun("own", action, options) for _ in range(callers)))

    events.install(counter)
    try:
        results = asyncio.run(main())
    finally:
        events.uninstall(counter)
        engine.close()
    assert ran == [1]
    assert results == [{"items": [1, 2]}] * callers
    assert len({id(result) for result in results}) == callers
    assert len({id(result["items"]) for result in results}) == callers
    assert Counter(str(e.outcome) for e in counter.events) == {
        "executed": 1,
        "waited": callers - 1,
    }
