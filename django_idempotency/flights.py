"""Local single-flight: duplicates inside one process wait on the first local caller.

A burst of duplicates of one key in one process (a retry storm, a redelivered batch)
should cost Redis one claim, not one claim and one wait per duplicate. The first local
caller of a record id *leads* a :class:`Flight`: it claims in Redis and, if another
process runs the action, waits there. Every later local caller with the same
fingerprint *follows*: it sends nothing to Redis and gets the leader's outcome, the
final record, in memory, even when that record could not be stored. When the leader
releases the key (the action failed in a way that is not stored) or gives up waiting,
followers try again, and the first of them leads the next flight.

A caller whose fingerprint differs from the flight's does not follow: Redis, not a
local guess, decides whether it is a mismatch. Nor does the leader itself (the same
thread, or the same asyncio task, calling again from inside its own action): it would
wait for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import threading
from typing import Any

#: A flight's outcome telling followers to try again themselves.
RETRY: Any = object()
_PENDING: Any = object()

#: An asyncio follower: its deadline (its loop's time), a tie-breaker, its future.
_Waiter = tuple[float, int, "asyncio.Future[Any]"]


class Flight:
    """The local callers of one record id."""

    __slots__ = ("_event", "_futures", "_timers", "fingerprint", "leader", "outcome", "rid")

    def __init__(self, rid: bytes, fingerprint: bytes, leader: tuple[int, int]) -> None:
        self.rid = rid
        self.fingerprint = fingerprint
        self.leader = leader
        self.outcome: Any = _PENDING
        # Made only when a follower comes: most flights never have one.
        self._event: threading.Event | None = None
        # Asyncio followers by loop, each a heap by deadline: however many follow in a
        # loop, it is woken once and times them out with one timer.
        self._futures: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
        self._timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}


class Flights:
    """The process's flights, by record id."""

    def __init__(self) -> None:
        self.reset()

    def join(self, rid: bytes, fingerprint: bytes) -> tuple[Flight, bool] | None:
        """The flight for ``rid`` and whether the caller leads it; ``None``: go alone."""
        if self._pid != os.getpid():
            # A process forked without the at-fork hook (uWSGI forks from C): its
            # parent's flights, and maybe a lock held at the fork, are not its own.
            self.reset()
        me = _caller()
        with self._lock:
            flight = self._flights.get(rid)
            if flight is None:
                flight = self._flights[rid] = Flight(rid, fingerprint, me)
                return flight, True
            if flight.fingerprint != fingerprint or flight.leader == me:
                return None
            return flight, False

    def land(self, flight: Flight, outcome: Any) -> None:
        """End ``flight`` with ``outcome`` (a final record, or :data:`RETRY`)."""
        with self._lock:
            if self._flights.get(flight.rid) is flight:
                del self._flights[flight.rid]
            if flight.outcome is not _PENDING:
                return
            flight.outcome = outcome
            event, futures, flight._futures = flight._event, flight._futures, {}
            timers, flight._timers = flight._timers, {}
        if event is not None:
            event.set()
        if not futures:
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:  # not in a coroutine
            here = None
        for loop, waiting in futures.items():
            timer = timers.get(loop)
            if loop is here:
                # Its own thread: settle now, rather than write to the loop's wake-up
                # pipe and wait a turn of the loop to do it.
                _settle(waiting, outcome, timer)
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_settle, waiting, outcome, timer)

    def wait(self, flight: Flight, timeout: float) -> Any:
        """A follower's wait: the outcome, or ``None`` when ``timeout`` ran out."""
        with self._lock:
            if flight.outcome is not _PENDING:
                return flight.outcome
            if flight._event is None:
                flight._event = threading.Event()
            event = flight._event
        event.wait(max(timeout, 0))
        return None if flight.outcome is _PENDING else flight.outcome

    def await_outcome(self, flight: Flight, timeout: float) -> asyncio.Future[Any]:
        """:meth:`wait` for a coroutine (no thread): a future to await."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + max(timeout, 0)
        with self._lock:
            if flight.outcome is not _PENDING:
                future.set_result(flight.outcome)
                return future
            heapq.heappush(flight._futures.setdefault(loop, []), (deadline, id(future), future))
            timer = flight._timers.get(loop)
            if timer is None or deadline < timer.when():
                if timer is not None:
                    timer.cancel()
                self._arm(flight, loop, deadline)
        return future

    def _arm(self, flight: Flight, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        flight._timers[loop] = loop.call_at(deadline, self._expire, flight, loop, deadline)

    def _expire(self, flight: Flight, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Time out the followers in ``loop`` whose deadline has come (the loop's timer)."""
        # A loop may run a timer up to its clock's resolution early.
        now = max(loop.time(), deadline)
        expired = []
        with self._lock:
            waiting = flight._futures.get(loop)
            if flight.outcome is not _PENDING or waiting is None:
                return
            while waiting and waiting[0][0] <= now:
                expired.append(heapq.heappop(waiting))
            if waiting:
                self._arm(flight, loop, waiting[0][0])
            else:
                del flight._futures[loop], flight._timers[loop]
        _settle(expired, None, None)

    def reset(self) -> None:
        """Forget every flight (a forked child has none of its parent's)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._flights: dict[bytes, Flight] = {}


def _caller() -> tuple[int, int]:
    """Who is calling: the thread, and the asyncio task running in it (0 for none)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop in this thread
        task = None
    return threading.get_ident(), 0 if task is None else id(task)


def _settle(waiting: list[_Waiter], value: Any, timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()
    for _, _, future in waiting:
        if not future.done():
            future.set_result(value)


flights = Flights()
# Only a speed-up: join() notices a new process by itself.
os.register_at_fork(after_in_child=flights.reset)
