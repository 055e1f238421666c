"""Storm timestamps taken inside the server (or the ``run()`` process), without Redis.

An :class:`~django_idempotency.events.Observer` notes, per request or call:

* the owner's *completion*: the wall-clock time the ``store`` span ends, i.e. the moment
  Redis acknowledged the final record, before the engine wakes the local followers
  (the ``executed`` event itself comes after them, so it would make delays negative);
* a waiter's *decision*: the time its ``waited`` (or ``replayed``) event is emitted,
  i.e. when it has the final record in hand and starts building its answer.

:func:`begin` opens a :class:`Caller` for the current thread or asyncio task (with its
Redis command tally, :mod:`benchmarks.counting`); the storm middleware and
``benchmarks.api_bench`` read it at the end. Installed only for storms: with an observer
the engine also times each store operation, which the hot-path rows must not pay.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks import counting

_stored_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "bench_stored_at", default=None
)
_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "bench_caller", default=None
)


@dataclass
class Caller:
    """What one request or call did during a storm."""

    tally: Counter[str]
    outcome: str = ""
    #: When this caller's completion was stored (the owner), or it decided (a waiter).
    at: float | None = None
    pid: int = field(default_factory=os.getpid)

    def headers(self) -> dict[str, str]:
        return {
            "X-Bench-Outcome": self.outcome,
            "X-Bench-At": repr(self.at) if self.at is not None else "",
            "X-Bench-Pid": str(self.pid),
            "X-Bench-Commands": str(counting.work(self.tally)),
            "X-Bench-Command-Names": ",".join(
                f"{name}={n}" for name, n in sorted(self.tally.items())
            ),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "at": self.at,
            "commands": counting.work(self.tally),
            "names": dict(self.tally),
        }


class _StoreSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        _stored_at.set(time.time())


class Clock:
    """The storm observer (see the module docstring)."""

    def event(self, event: Any) -> None:
        caller = _caller.get()
        if caller is None:
            return
        outcome = str(event.outcome)
        caller.outcome = outcome
        if outcome == "executed":
            caller.at = _stored_at.get()
        elif outcome in ("waited", "replayed"):
            caller.at = time.time()

    def store_op(self, op: Any, seconds: float) -> None:
        return None

    def span(self, name: str, door: Any) -> contextlib.AbstractContextManager[Any]:
        return _StoreSpan() if name == "store" else contextlib.nullcontext()


_installed = False


def install() -> None:
    """Install the observer and the command tally, once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    from django_idempotency import events

    counting.install()
    events.install(Clock())


def begin() -> Caller:
    """A new :class:`Caller` for the current thread or asyncio task."""
    caller = Caller(counting.begin())
    _caller.set(caller)
    _stored_at.set(None)
    return caller
