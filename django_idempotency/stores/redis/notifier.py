"""One subscription per process that wakes every local waiter: waiting holds no connection.

A duplicate that finds a record running waits for its owner. Blocking a pooled
connection per waiter (the first design) let a burst larger than the pool fail with
"Too many connections" and starve the owner's own completion. Instead each process
subscribes once, from one daemon thread, to the prefix's notification channel, and the
``complete`` and ``release`` scripts publish the record's key name there whenever a
duplicate has flagged the record. The thread hands each message to the local waiters
of that key: threads wait on an :class:`threading.Event`, coroutines on a future of
their own event loop. Nothing is polled, and the number of connections does not depend
on the number of waiters.

No notification may be missed between a waiter's claim and its wait:

* The subscription must have been live when the claim was sent. A waiter reads
  :meth:`RedisNotifier.position` before its claim; if the subscription was down or has
  been re-established since (an *epoch* change), the waiter looks at the record again
  instead of waiting.
* A message that arrives after the claim was sent but before the waiter registers is
  remembered for a few seconds by key name (with its sequence number), so registering
  late finds it.
* When the connection drops, every registered waiter is told to look again, since
  messages may have been lost meanwhile; the thread reconnects with a backoff. After a
  Sentinel failover it reconnects to the new primary; on Redis Cluster, classic pub/sub
  messages reach every node, so one subscription on any node hears every shard.

A waiter that hears nothing still looks again when its owner's lease would end (a
crashed owner publishes nothing) and at its deadline; see the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from ..base import Slot
from ..memory import Watch, forget

logger = logging.getLogger("django_idempotency")

#: How long a received notification is remembered for a waiter registering late.
RECENT_SECONDS = 10.0
RECENT_MAX = 100_000
#: Silence after which the subscription is checked with a PING.
PING_AFTER = 5.0
#: How long a PING (or the subscription's confirmation) may take before reconnecting.
ANSWER_WITHIN = 5.0

Position = tuple[int, int]


_live: weakref.WeakSet[RedisNotifier] = weakref.WeakSet()


class RedisNotifier:
    """The process's subscription to one notification channel, shared by all waiters."""

    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self.channel = channel
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._watches: dict[str, list[Watch]] = {}
        #: Waiters for the subscription itself (they look again once it is live).
        self._pending: list[Watch] = []
        self._epochs = itertools.count(1)
        #: The live subscription's number; 0 while there is none.
        self.epoch = 0
        self._seq = 0
        self._recent: dict[str, tuple[int, float]] = {}
        self._thread: threading.Thread | None = None
        self._stop = False

    # -- the waiter's side ----------------------------------------------------------------

    def position(self) -> Position:
        """Read before sending a claim; hand it to :meth:`wait` if the claim finds a runner."""
        if self._pid != os.getpid():
            return 0, 0  # the parent's subscription: not live in this process
        return self.epoch, self._seq

    def _register(self, slot: Slot, position: Position, watch: Watch) -> bool:
        """Register ``watch`` for ``slot``: True when it waits for the owner (or was told at
        once that the owner finished); False when the subscription was not live since the
        claim, and the caller waits only for that, then looks again."""
        epoch, seq = position
        self._own_process()
        with self._lock:
            self._ensure_thread()
            heard = self._recent.get(slot.name)
            if heard is not None and heard[0] > seq:
                # It finished after our claim was sent: the waiter is told so at once,
                # rather than waiting for a notification already received.
                watch.deliver(True)
                return True
            if epoch == 0 or epoch != self.epoch:
                if self.epoch == 0:
                    # Not subscribed yet: the caller waits for it, then looks again.
                    self._pending.append(watch)
                else:
                    watch.deliver(False)  # live, but re-established since the claim
                return False
            self._watches.setdefault(slot.name, []).append(watch)
            return True

    @contextlib.contextmanager
    def _watching(self, slot: Slot, position: Position, watch: Watch) -> Iterator[bool]:
        """``watch`` registered for the block; yields whether it waits for the owner (else
        only, bounded, for the subscription, so that the next claim's wait is covered)."""
        try:
            yield self._register(slot, position, watch)
        finally:
            with self._lock:
                forget(self._watches, slot.name, watch)
                if watch in self._pending:
                    self._pending.remove(watch)

    def wait(self, slot: Slot, position: Position, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when the slot's owner finished.

        False means: look at the record again (the wait ran out, the subscription was
        not live since the claim, or it dropped meanwhile).
        """
        watch = Watch()
        with self._watching(slot, position, watch) as live:
            return watch.wait(timeout if live else min(timeout, ANSWER_WITHIN)) and live

    async def await_outcome(self, slot: Slot, position: Position, timeout: float) -> bool:
        """:meth:`wait` for a coroutine: it holds neither a thread nor a connection."""
        watch = Watch(asyncio.get_running_loop())
        with self._watching(slot, position, watch) as live:
            return await watch.wait_async(timeout if live else min(timeout, ANSWER_WITHIN)) and live

    # -- the thread -----------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        # Called with the lock held; also revives a thread asked to stop.
        self._stop = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="idempotency-notifier", daemon=True
            )
            self._thread.start()

    def _own_process(self) -> None:
        # A process forked without the at-fork hook (uWSGI forks from C) holds its
        # parent's state: a thread object that says it is alive but does not run here.
        if self._pid != os.getpid():
            self._reset()

    def start(self) -> None:
        """Subscribe now, rather than when this process's first duplicate waits."""
        self._own_process()
        with self._lock:
            self._ensure_thread()

    def close(self) -> None:
        """Stop the thread (it restarts if another waiter comes)."""
        with self._lock:
            self._stop = True

    def _run(self) -> None:
        backoff = 0.05
        quiet = False  # after the first failure of an outage, say nothing more
        while not self._stop:
            pubsub: Any = None
            try:
                pubsub = self._client.pubsub()
                pubsub.subscribe(self.channel)
                self._await_confirmation(pubsub)
                with self._lock:
                    self.epoch = next(self._epochs)
                    pending, self._pending = self._pending, []
                for watch in pending:
                    watch.deliver(False)
                backoff, quiet = 0.05, False
                self._listen(pubsub)
            except Exception as exc:
                if not self._stop:
                    logger.log(
                        logging.DEBUG if quiet else logging.WARNING,
                        "idempotency notifier: no subscription to %s (%s); waiters look at "
                        "their records again, and it reconnects",
                        self.channel,
                        exc,
                    )
                    quiet = True
            finally:
                self._drop_all()
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
            if not self._stop:
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def _await_confirmation(self, pubsub: Any) -> None:
        deadline = time.monotonic() + ANSWER_WITHIN
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and _text(message["type"]) == "subscribe":
                return
        raise TimeoutError("no confirmation of the subscription")

    def _listen(self, pubsub: Any) -> None:
        last_heard = time.monotonic()
        ping_sent: float | None = None
        while not self._stop:
            message = pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is None:
                if ping_sent is not None and now - ping_sent > ANSWER_WITHIN:
                    raise TimeoutError("the subscription did not answer a PING")
                if ping_sent is None and now - last_heard > PING_AFTER:
                    pubsub.ping()
                    ping_sent = now
                continue
            last_heard, ping_sent = now, None
            if _text(message["type"]) == "message":
                self._dispatch(message["data"])

    def _dispatch(self, data: bytes | str) -> None:
        name = _text(data).rpartition(" ")[0]
        now = time.monotonic()
        with self._lock:
            self._seq += 1
            recent = self._recent
            recent.pop(name, None)
            recent[name] = (self._seq, now)
            while recent:
                oldest, (_, at) = next(iter(recent.items()))
                if now - at < RECENT_SECONDS and len(recent) <= RECENT_MAX:
                    break
                del recent[oldest]
            watches = self._watches.pop(name, ())
        for watch in watches:
            watch.deliver(True)

    def _drop_all(self) -> None:
        """The subscription ended: every waiter looks again (messages may be lost)."""
        with self._lock:
            self.epoch = 0
            everyone = [w for ws in self._watches.values() for w in ws] + self._pending
            self._watches, self._pending = {}, []
        for watch in everyone:
            watch.deliver(False)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _after_fork() -> None:
    # A forked child has no notifier thread, and its parent's waiters are not its own.
    for notifier in list(_live):
        notifier._reset()


# Only a speed-up: every entry point notices a new process by itself (_own_process).
os.register_at_fork(after_in_child=_after_fork)
