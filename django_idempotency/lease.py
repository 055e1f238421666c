"""Lease renewal: one daemon thread per process keeps every running claim alive.

A claim's record expires ``LOCK_TTL`` after its last renewal, so a crashed owner
frees its keys; a slow but live owner must therefore renew. One thread renews all
of the process's leases (one batch per store) at a third of their TTL, rather than
one timer per call. It speaks to the store through the storage seam only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import events

if TYPE_CHECKING:
    from .stores.base import Slot, Store

logger = logging.getLogger("django_idempotency")


class Lease:
    """The claim on one record, held while its action runs.

    ``on_lost`` is called, from the keeper's thread, when a renewal finds the record no
    longer held by ``token``: another caller may run the action again. It reports that.
    """

    def __init__(
        self, store: Store, slot: Slot, token: bytes, lease_ms: int, on_lost: Callable[[], None]
    ) -> None:
        self.store = store
        self.slot = slot
        self.token = token
        self.lease_ms = lease_ms
        self.on_lost = on_lost
        self.due = time.monotonic() + self.interval

    @property
    def interval(self) -> float:
        """Seconds between renewals: a third of the lease, so two may fail before expiry."""
        return self.lease_ms / 3000


class LeaseKeeper:
    """Renews the leases it holds until they are dropped; one per process."""

    def __init__(self) -> None:
        #: The process it renews for: a forked child needs a keeper (and thread) of its own.
        self.pid = os.getpid()
        self._leases: set[Lease] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        # When the keeper thread will next wake by itself (-inf while it is awake).
        self._wake_at = float("-inf")
        # How long the thread sleeps with no lease held: the interval of the last lease
        # held. A lease held after that shares that due time or a later one, so holding
        # it wakes nobody; only a shorter lease (due sooner) does. Sleeping 60 s instead
        # would make the next hold wake the thread, once per sequential request.
        self._idle_wait = 60.0

    def hold(self, lease: Lease) -> Lease:
        """Start renewing ``lease``."""
        with self._cond:
            self._leases.add(lease)
            self._idle_wait = lease.interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="idempotency-lease-keeper", daemon=True
                )
                self._thread.start()
            elif lease.due < self._wake_at:
                # Waking the thread for every request would cost a context switch each;
                # only a lease due before its planned wake-up needs it.
                self._cond.notify()
        return lease

    def drop(self, lease: Lease) -> None:
        """Stop renewing ``lease``."""
        with self._cond:
            self._leases.discard(lease)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    due = [lease for lease in self._leases if lease.due <= now]
                    if due:
                        break
                    wake_at = min(
                        (lease.due for lease in self._leases), default=now + self._idle_wait
                    )
                    self._wake_at = wake_at
                    self._cond.wait(wake_at - now)
                    self._wake_at = float("-inf")
            self._renew(due)

    def _renew(self, due: list[Lease]) -> None:
        by_store: dict[Store, list[Lease]] = defaultdict(list)
        for lease in due:
            by_store[lease.store].append(lease)
        for store, leases in by_store.items():
            started = time.monotonic()
            try:
                with events.timed(events.StoreOp.RENEW):
                    kept = store.renew([(x.slot, x.token, x.lease_ms) for x in leases])
            except Exception:
                # Redis trouble: try again soon; the lease expires if it lasts.
                logger.warning(
                    "could not renew %d idempotency lease(s)", len(leases), exc_info=True
                )
                for lease in leases:
                    lease.due = time.monotonic() + min(lease.interval, 1.0)
                continue
            for lease, ok in zip(leases, kept, strict=True):
                lease.due = started + lease.interval
                if not ok:
                    self._lose(lease)

    def _lose(self, lease: Lease) -> None:
        self.drop(lease)
        lease.on_lost()


keeper = LeaseKeeper()


def _after_fork() -> None:
    # A forked child has no keeper thread and none of its parent's leases.
    global keeper
    keeper = LeaseKeeper()


# Only a speed-up: get_keeper() notices a new process by itself, for servers that fork
# from C without running this hook (uWSGI by default). There the parent's thread object
# still says it is alive, so the child would never start one and no lease be renewed.
os.register_at_fork(after_in_child=_after_fork)


def renewal_blocker() -> str | None:
    """Why the keeper thread may not run in this server process; ``None`` when it can.

    uWSGI runs Python threads only with ``enable-threads`` (or ``threads``): without
    them the keeper may never renew, a lease held longer than ``LOCK_TTL`` silently
    lapses, and a duplicate runs the action again. The ``uwsgi`` module exists only
    inside a uWSGI process; its ``opt`` holds the options it was started with and
    ``has_threads`` whether it runs threads. The ``pyuwsgi`` wheel runs them even
    without the option (Python is up before uWSGI starts), but the same configuration
    on a compiled uWSGI does not: the configuration is what is refused, wherever it runs.
    """
    try:
        import uwsgi
    except ImportError:
        return None
    opt = getattr(uwsgi, "opt", {})
    enabled = opt.get("enable-threads") in (True, b"true", b"1", b"yes", b"on")
    try:
        threads = int(opt.get("threads") or 0)
    except ValueError:
        threads = 0
    if (enabled or threads > 0) and getattr(uwsgi, "has_threads", True):
        return None
    return (
        "uWSGI is running without Python threads, so django-idempotency cannot renew the "
        "lease of a request that runs longer than LOCK_TTL, and a duplicate would run it "
        "again. Set enable-threads = true (or threads = N) in the uWSGI configuration."
    )


def require_renewal() -> None:
    """Raise ``ImproperlyConfigured`` where leases could not be renewed (see above)."""
    reason = renewal_blocker()
    if reason is not None:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(reason)


def get_keeper() -> LeaseKeeper:
    """The process's lease keeper."""
    if keeper.pid != os.getpid():
        _after_fork()
    return keeper
