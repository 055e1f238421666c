"""Redis commands sent by one request or call, counted where they are sent.

MONITOR (``benchmarks.probe``) counts per connection; a thousand waiters share a few
connections, so it cannot say which waiter sent what. :func:`install` wraps redis-py's
``send_packed_command`` (blocking and asyncio) so that each command is added to the
:class:`Tally` of the thread or asyncio task that sent it (a ``ContextVar``):
:func:`begin` starts one per request or call. Commands sent outside any tally (the
notifier's subscription, the lease keeper) are not counted here; MONITOR sees them.
"""

from __future__ import annotations

import contextvars
from collections import Counter
from typing import Any

#: Connection bookkeeping, not a request's work (sent once per new connection).
HOUSEKEEPING = frozenset({"hello", "client", "select", "auth", "ping", "subscribe", "readonly"})

_current: contextvars.ContextVar[Counter[str] | None] = contextvars.ContextVar(
    "bench_tally", default=None
)
_installed = False


def command_names(packed: Any) -> list[str]:
    """The command names in what redis-py hands ``send_packed_command``."""
    if isinstance(packed, (bytes, bytearray, memoryview)):
        chunks = [bytes(packed)]
    elif isinstance(packed, str):
        chunks = [packed.encode()]
    else:
        chunks = [bytes(c) if not isinstance(c, str) else c.encode() for c in packed]
    data = b"".join(chunks)
    names = []
    pos = 0
    # RESP arrays of bulk strings: "*<n>\r\n$<len>\r\n<name>\r\n..."; skip each argument.
    while pos < len(data) and data[pos : pos + 1] == b"*":
        end = data.index(b"\r\n", pos)
        count = int(data[pos + 1 : end])
        pos = end + 2
        for i in range(count):
            end = data.index(b"\r\n", pos)
            length = int(data[pos + 1 : end])
            if i == 0:
                names.append(data[end + 2 : end + 2 + length].decode("latin-1").lower())
            pos = end + 2 + length + 2
    return names


def _add(packed: Any) -> None:
    tally = _current.get()
    if tally is not None:
        tally.update(command_names(packed))


def install() -> None:
    """Wrap redis-py's senders once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    import redis.asyncio.connection
    import redis.connection

    sync_class = redis.connection.AbstractConnection
    sync_send = sync_class.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        _add(command)
        sync_send(self, command, check_health)

    sync_class.send_packed_command = send  # type: ignore[method-assign]

    async_class = redis.asyncio.connection.AbstractConnection
    async_send = async_class.send_packed_command

    async def asend(self: Any, command: Any, check_health: bool = True) -> None:
        _add(command)
        await async_send(self, command, check_health)

    async_class.send_packed_command = asend  # type: ignore[method-assign]


def begin() -> Counter[str]:
    """A new tally for the current thread or task; returned to be read at the end."""
    tally: Counter[str] = Counter()
    _current.set(tally)
    return tally


def work(tally: Counter[str]) -> int:
    """Commands in ``tally`` that are a request's work (connection bookkeeping left out)."""
    return sum(n for name, n in tally.items() if name not in HOUSEKEEPING)
