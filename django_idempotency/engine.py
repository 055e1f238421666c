"""The engine: claim, wait, fence, complete and release. Every rule, for every door.

Transport-neutral: the HTTP lifecycle and the ``run()`` lifecycle (:mod:`.flows`) turn
requests and calls into the engine's terms (a kind, a scope, a key, a fingerprint),
and the engine speaks to a store only through :mod:`.stores.base`. It performs no I/O
itself: :meth:`Engine.acquiring`, :meth:`~Engine.completing` and
:meth:`~Engine.releasing` are flows that yield the steps they need (:mod:`.steps`), so
one set of rules serves the blocking and the asyncio doors, each with its driver.

The rules:

* **Claim** in one atomic step: create a running record holding a fencing token and a
  lease, or find the record already there. A final record is returned (after checking
  its MAC, and that the fingerprint matches: else 422); a running one means a
  concurrent duplicate.
* **Coalesce** locally: duplicates inside this process follow the first local caller
  (:mod:`.flights`) and send nothing to the store.
* **Wait** for a concurrent owner by notification (:class:`~.stores.base.Notifier`), up
  to the wait timeout; every wait ends when the owner's lease would, so a crashed
  owner is noticed within its lease, and the record is looked at again after every
  wake-up. ``reject`` mode refuses at once; ``MAX_WAITERS`` bounds how many wait per
  process.
* **Lease**: one keeper thread renews every held claim at a third of its lease.
* **Outcome unknown**: a claim made under the ``refuse`` policy outlives its lease by
  its record's TTL; once the lease ends unsettled (its owner died), every claim of the key
  is refused (:class:`OutcomeUnknown`) until an operator deletes the record. Under
  ``rerun`` the record ends with the lease and the next claim runs the action again.
* **Complete** or **release** only while the token still owns the record (a late
  finisher never overwrites a newer owner), once per claim. Local followers get the
  final record even when storing it failed. A completion never fails because the
  connection pool is busy: it retries until half its lease has passed.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from . import events
from .events import Door, Outcome, StoreOp
from .exceptions import (
    FingerprintMismatch,
    IdempotencyTimeout,
    OutcomeUnknown,
    RecordTampered,
    RequestInProgress,
    ResultNotStored,
)
from .flights import RETRY, Flight, Flights
from .flights import flights as process_flights
from .lease import Lease, LeaseKeeper, get_keeper
from .options import Conflict
from .policies import OutcomeUnknownPolicy
from .records import IntegrityError, Kind, Record, Sealer, State, record_id, text_bytes
from .steps import Call, Context, Flow, Follow, Listen, Pause, drive
from .stores.base import ClaimReply, Slot, Store, StoreBusy, StoreError

logger = logging.getLogger("django_idempotency")

T = TypeVar("T")

#: What a client is told when its key was used with another request.
MISMATCH_DETAIL = (
    "This key was already used with a different request (method, path, query string or body)."
)

#: A waiter looks at a running record at least this often before its lease check.
MIN_RECHECK = 0.05


def first_answer(record: Record) -> str:
    """What became of the first request or call with a key, for a client told why its
    reuse of the key is refused (a stored 400 is the usual surprise)."""
    if record.state is State.RUNNING:
        return "That request is still being processed."
    if record.kind is Kind.HTTP:
        status = record.status or 200
        try:
            phrase = f" {HTTPStatus(status).phrase}"
        except ValueError:
            phrase = ""
        if record.state is State.UNREPLAYABLE:
            return f"Its response ({status}{phrase}) was not stored; it is not run again."
        return f"Its response, {status}{phrase}, is stored and replayed for this key."
    if record.state is State.ERROR:
        return "That call raised an error, which is stored and replayed for this key."
    return "That call's outcome is stored and replayed for this key."


def mismatch(record: Record) -> FingerprintMismatch:
    """The refusal of a key reused with another request, saying what its first one got."""
    return FingerprintMismatch(f"{MISMATCH_DETAIL} {first_answer(record)}")


def _in_progress(retry_after: int) -> RequestInProgress:
    return RequestInProgress(
        "A request with this key is still being processed; retry later.",
        retry_after=retry_after,
    )


def _timed_out(wait_timeout: float, retry_after: int, waited: float | None) -> IdempotencyTimeout:
    return IdempotencyTimeout(
        f"The first request with this key did not finish within {wait_timeout:g} s.",
        retry_after=retry_after,
        waited=waited,
    )


def _retry_after(lease_left_ms: int) -> int:
    # Whole seconds, rounded up: a client told 0 would retry at once.
    return max(1, -(-lease_left_ms // 1000))


def now_ms() -> int:
    """Wall-clock milliseconds, as stored in records."""
    return int(time.time() * 1000)


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds (at least 1)."""
    return max(int(seconds * 1000), 1)


class _Tokens:
    """Fencing tokens: 12 bytes, unique per claim across processes and machines.

    The process id, 4 random bytes drawn per process and a counter: two live processes
    of one machine differ by construction, two machines by the random bytes. The pid is
    checked at every draw rather than trusted to an at-fork hook, which a server that
    forks from C (uWSGI by default) never runs: two workers sharing their parent's prefix
    and counter each took the other's claim for their own. ``os.urandom`` per claim
    would cost more than the rest of the claim's Python work.
    """

    def __init__(self) -> None:
        # One tuple, replaced whole, so a thread never pairs one prefix with another's
        # counter (two threads noticing a new process at once each draw their own).
        self.state: tuple[int, bytes, itertools.count[int]] = (-1, b"", itertools.count())

    def __call__(self) -> bytes:
        pid, prefix, counter = self.state
        if pid != os.getpid():
            pid = os.getpid()
            prefix = (pid & 0xFFFFFFFF).to_bytes(4, "big") + secrets.token_bytes(4)
            counter = itertools.count()
            self.state = (pid, prefix, counter)
        return prefix + (next(counter) & 0xFFFFFFFF).to_bytes(4, "big")


_new_token = _Tokens()


@dataclass(frozen=True, slots=True)
class Found:
    """A final record, found at once (``waited`` is ``None``) or after waiting."""

    record: Record
    waited: float | None = None

    @property
    def outcome(self) -> Outcome:
        """What replaying it reports: ``waited`` for a duplicate that waited, else ``replayed``."""
        return Outcome.REPLAYED if self.waited is None else Outcome.WAITED


class Engine:
    """Every rule of the contract, over one store; shared by all doors of a process."""

    def __init__(
        self,
        store: Store,
        sealer: Sealer,
        *,
        max_waiters: int | None = None,
        flights: Flights | None = None,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.max_waiters = max_waiters
        self.flights = flights if flights is not None else process_flights
        self.context = Context(store, self.flights)
        self._keeper = keeper
        self._lock = threading.Lock()
        self._waiting = 0

    @property
    def keeper(self) -> LeaseKeeper:
        """The lease keeper (the process's own unless one was given)."""
        return self._keeper if self._keeper is not None else get_keeper()

    def slot(self, kind: Kind, scope: str | bytes, key: str | bytes) -> Slot:
        """Where the record of ``key`` in ``scope`` lives."""
        return self.store.slot(record_id(kind, scope, key))

    # -- deciding on what a claim found ---------------------------------------------------

    def verified(self, who: Claim, raw: bytes) -> Record:
        """The record in ``raw``, if it verifies and belongs to ``who``'s request."""
        try:
            record = self.sealer.open(who.slot.rid, raw)
        except IntegrityError as exc:
            events.emit(Outcome.INTEGRITY_FAILED, who.door, *who.given, detail=str(exc))
            raise RecordTampered(
                "The stored response for this key failed its integrity check, so it is "
                "neither replayed nor run again. Use a new key for a new request."
            ) from exc
        # A different scope or key under this id would be an id collision: refuse it too.
        if (who.fingerprint and record.fingerprint != who.fingerprint) or (
            record.scope != who.scope or record.key != who.key
        ):
            raise mismatch(record)
        return record

    def _judge(
        self,
        claim: Claim,
        reply: ClaimReply,
        deadline: float,
        conflict: Conflict,
    ) -> Found | float:
        """A final record found, or how long to wait; raises the refusals."""
        assert reply.record is not None
        record = self.verified(claim, reply.record)
        since = claim.waiting_since
        waited = None if since is None else time.monotonic() - since
        if record.state is not State.RUNNING:
            return Found(record, waited)
        if record.hold_ms is not None and reply.lease_left_ms <= 0:
            # Its owner claimed it under the refuse policy and stopped before storing an
            # outcome: whether the action took effect is unknown, so it is not run again.
            raise OutcomeUnknown(
                "The first request with this key stopped before its outcome was stored "
                "(its process died), so whether it took effect is unknown. It is not run "
                "again until an operator reconciles it and purges its record."
            )
        retry_after = _retry_after(reply.lease_left_ms)
        if conflict is Conflict.REJECT:
            raise _in_progress(retry_after)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(claim.wait_timeout, retry_after, waited)
        if since is None:
            self._start_waiting(claim, retry_after)
        # Every wait ends when the owner's lease would run out, so an owner that crashed
        # (and publishes nothing) is noticed then, whether or not this is the first wait:
        # a live owner has renewed by then and the waiter waits again.
        return min(left, max(reply.lease_left_ms / 1000, MIN_RECHECK))

    def _start_waiting(self, claim: Claim, retry_after: int) -> None:
        with self._lock:
            if self.max_waiters is not None and self._waiting >= self.max_waiters:
                raise RequestInProgress(
                    "Too many requests are waiting for concurrent duplicates in this "
                    "process; retry later.",
                    retry_after=retry_after,
                )
            self._waiting += 1
        claim.waiting_since = time.monotonic()

    def _stop_waiting(self, claim: Claim) -> None:
        if claim.waiting_since is not None:
            claim.waiting_since = None
            with self._lock:
                self._waiting -= 1

    def _before_following(self, claim: Claim, conflict: Conflict) -> float:
        """A local follower about to wait: refused in reject mode or past ``MAX_WAITERS``."""
        retry_after = _retry_after(claim.lease_ms)
        if conflict is Conflict.REJECT:
            raise _in_progress(retry_after)
        self._start_waiting(claim, retry_after)
        assert claim.waiting_since is not None
        return claim.waiting_since

    def _claimed(self, claim: Claim, created: int) -> Claim:
        claim.created_ms = created
        claim.lease = Lease(
            self.store, claim.slot, claim.token, claim.lease_ms, lambda: self.lease_lost(claim)
        )
        self.keeper.hold(claim.lease)
        return claim

    def _follow_or_lead(self, claim: Claim) -> tuple[Flight | None, bool]:
        joined = self.flights.join(claim.slot.rid, claim.fingerprint)
        if joined is None:
            return None, True
        return joined

    def _followed(self, claim: Claim, outcome: Any, started: float) -> Found | None:
        """What a follower got from its flight: a record, or ``None`` to try again."""
        if outcome is None:
            waited = time.monotonic() - started
            raise _timed_out(claim.wait_timeout, _retry_after(claim.lease_ms), waited)
        if outcome is RETRY:
            return None
        return Found(outcome, time.monotonic() - started)

    # -- acquiring -----------------------------------------------------------------------

    def acquiring(
        self,
        kind: Kind,
        door: Door,
        scope: str | bytes,
        key: str | bytes,
        fingerprint: bytes,
        *,
        lock_ttl: float,
        wait_timeout: float,
        conflict: Conflict,
        outcome_unknown: OutcomeUnknownPolicy = OutcomeUnknownPolicy.RERUN,
        ttl: float | None = None,
    ) -> Flow[Claim | Found]:
        """Claim the record, or return the final one (waiting for a concurrent owner).

        A flow: ``yield from`` it in a lifecycle run by :func:`~.steps.drive` or
        :func:`~.steps.adrive`. Raises :class:`FingerprintMismatch`,
        :class:`RequestInProgress`, :class:`IdempotencyTimeout`, :class:`RecordTampered`,
        :class:`OutcomeUnknown` and :class:`~.stores.base.StoreError`.

        ``outcome_unknown`` says what the claim created here means if its owner dies
        before settling it: ``rerun``, the record goes with the lease and a retry runs
        again; ``refuse``, the record stays ``ttl`` seconds more and retries are refused.
        """
        claim = Claim(self, kind, door, scope, key, fingerprint, lock_ttl, wait_timeout)
        if outcome_unknown is OutcomeUnknownPolicy.REFUSE:
            if ttl is None:
                raise TypeError('outcome_unknown="refuse" needs the ttl its record is kept')
            claim.hold_ms = ms(ttl)
        deadline = time.monotonic() + claim.wait_timeout
        while True:
            flight, leading = self._follow_or_lead(claim)
            if not leading:
                assert flight is not None
                started = self._before_following(claim, conflict)
                try:
                    with events.span("wait", claim.door):
                        outcome = yield Follow(flight, deadline - started)
                finally:
                    self._stop_waiting(claim)
                found = self._followed(claim, outcome, started)
                if found is not None:
                    return found
                continue
            try:
                got = yield from self._remote(claim, deadline, conflict)
            except BaseException:
                if flight is not None:
                    self.flights.land(flight, RETRY)
                raise
            if isinstance(got, Claim):
                got.flight = flight
            elif flight is not None:
                self.flights.land(flight, got.record)
            return got

    def looking(
        self, kind: Kind, door: Door, scope: str | bytes, key: str | bytes
    ) -> Flow[Record | None]:
        """The record of ``key`` in ``scope``, verified, without claiming it (``None``: none).

        For a caller that only answers what is already decided (the edge in front of
        Django) and leaves every other request to a door that claims. The MAC and the
        scope and key are checked as for a claim (:class:`RecordTampered` and an
        ``integrity_failed`` event on failure); the fingerprint is left to the caller,
        which may not know the function a door computed it with.
        """
        claim = self.asking(kind, door, scope, key)
        raw = yield Call(StoreOp.READ, "read", (claim.slot,))
        return None if raw is None else self.verified(claim, raw)

    def asking(
        self, kind: Kind, door: Door, scope: str | bytes, key: str | bytes, fingerprint: bytes = b""
    ) -> Claim:
        """One who looks at the record of ``key`` without claiming it, to :meth:`verified`
        what it finds (an empty ``fingerprint``: any request's record is its own)."""
        return Claim(self, kind, door, scope, key, fingerprint, 1, 0)

    def _remote(self, claim: Claim, deadline: float, conflict: Conflict) -> Flow[Claim | Found]:
        notifier = self.store.notifier
        try:
            while True:
                position = notifier.position()
                created = now_ms()
                with events.span("claim", claim.door):
                    running = claim.running(created)
                    call = Call(StoreOp.CLAIM, "claim", (claim.slot, running, claim.lease_ms))
                    # A claim queues for a busy pool until the caller's wait deadline.
                    reply = yield from self._patient(call, max(deadline, time.monotonic() + 1))
                if reply.claimed:
                    return self._claimed(claim, created)
                decision = self._judge(claim, reply, deadline, conflict)
                if isinstance(decision, Found):
                    return decision
                with events.span("wait", claim.door):
                    yield Listen(claim.slot, position, decision)
        finally:
            self._stop_waiting(claim)

    # -- settling -------------------------------------------------------------------------

    def _settle(self, claim: Claim) -> bool:
        """True the first time a claim is settled (completed or released)."""
        with self._lock:
            if claim.settled:
                return False
            claim.settled = True
        self.keeper.drop(claim.lease)
        return True

    def final(self, claim: Claim, state: State, payload: bytes, status: int | None) -> Record:
        """The final record of ``claim``'s outcome."""
        return Record(
            state=state,
            kind=claim.kind,
            door=claim.door,
            scope=claim.scope,
            key=claim.key,
            fingerprint=claim.fingerprint,
            created_ms=claim.created_ms,
            finished_ms=now_ms(),
            status=status,
            payload=payload,
        )

    def _land(self, claim: Claim, outcome: Any) -> None:
        if claim.flight is not None:
            self.flights.land(claim.flight, outcome)

    # Every pooled connection busy (StoreBusy: nothing was sent) is waited out rather
    # than failed: a completion or release for up to half the lease (so the lease cannot
    # expire meanwhile), a claim until the caller's wait deadline. A result is never
    # lost, and a burst never fails, for want of a connection. Other errors propagate.

    @staticmethod
    def _patient(call: Call, until: float) -> Flow[Any]:
        pause = 0.001
        while True:
            try:
                return (yield call)
            except StoreBusy:
                if time.monotonic() >= until:
                    raise
                yield Pause(pause)
                pause = min(pause * 2, 0.02)

    def _until(self, claim: Claim) -> float:
        return time.monotonic() + claim.lease.lease_ms / 2000

    def complete(
        self,
        claim: Claim,
        state: State,
        payload: bytes,
        *,
        ttl: float,
        status: int | None = None,
    ) -> Record | None:
        """Store the outcome; ``None`` when the claim was already settled.

        Raises :class:`ResultNotStored` (the outcome could not be stored, or the lease
        was lost); local followers get the record either way.
        """
        return drive(self.context, self.completing(claim, state, payload, ttl=ttl, status=status))

    def completing(
        self, claim: Claim, state: State, payload: bytes, *, ttl: float, status: int | None = None
    ) -> Flow[Record | None]:
        """The flow of :meth:`complete`, to ``yield from``."""
        if not self._settle(claim):
            return None
        record = self.final(claim, state, payload, status)
        sealed = self.sealer.seal(claim.slot.rid, record)
        call = Call(StoreOp.COMPLETE, "complete", (claim.slot, claim.token, sealed, ms(ttl)))
        try:
            with events.span("store", claim.door):
                stored = yield from self._patient(call, self._until(claim))
        except StoreError as exc:
            raise ResultNotStored(f"The store failed while storing the result: {exc}") from exc
        finally:
            self._land(claim, record)
        if not stored:
            self.lease_lost(claim)
            raise ResultNotStored(
                "The lease was lost before the result was stored; another caller may run "
                "the action again."
            )
        return record

    def release(self, claim: Claim) -> bool:
        """Let the next caller run the action; False when the claim was already settled.

        Store errors are only logged: the lease then expires on its own.
        """
        return drive(self.context, self.releasing(claim))

    def releasing(self, claim: Claim) -> Flow[bool]:
        """The flow of :meth:`release`, to ``yield from``."""
        if not self._settle(claim):
            return False
        call = Call(StoreOp.RELEASE, "release", (claim.slot, claim.token))
        try:
            yield from self._patient(call, self._until(claim))
        except StoreError:
            # The lease expires on its own; until then retries wait or get 409.
            logger.warning("could not release idempotency key %r", claim.given[1], exc_info=True)
        finally:
            self._land(claim, RETRY)
        return True

    def lease_lost(self, claim: Claim) -> None:
        """Report a lost lease once (the keeper and a failed completion both may)."""
        with self._lock:
            if claim.reported_lost:
                return
            claim.reported_lost = True
        events.emit(Outcome.LEASE_LOST, claim.door, *claim.given)

    def close(self) -> None:
        """Release what the store holds (its notifier thread, the connections it keeps)."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


class Claim:
    """One caller's claim on a key: who asks, for what, and since when it waits.

    The engine makes it (:meth:`Engine.acquiring`, :meth:`Engine.asking`); once the store
    grants it, ``acquiring`` returns it with its ``lease`` and ``created_ms``, the action
    may run, and :meth:`Engine.complete` or :meth:`Engine.release` follows.
    """

    __slots__ = (
        "created_ms",
        "door",
        "engine",
        "fingerprint",
        "flight",
        "given",
        "hold_ms",
        "key",
        "kind",
        "lease",
        "lease_ms",
        "reported_lost",
        "scope",
        "settled",
        "slot",
        "token",
        "wait_timeout",
        "waiting_since",
    )

    lease: Lease
    created_ms: int

    def __init__(
        self,
        engine: Engine,
        kind: Kind,
        door: Door,
        scope: str | bytes,
        key: str | bytes,
        fingerprint: bytes,
        lock_ttl: float,
        wait_timeout: float,
    ) -> None:
        self.engine = engine
        self.kind = kind
        self.door = door
        self.given = (scope, key)
        self.scope = text_bytes(scope)
        self.key = text_bytes(key)
        self.fingerprint = fingerprint
        self.slot = engine.store.slot(record_id(kind, self.scope, self.key))
        self.token = _new_token()
        self.lease_ms = ms(lock_ttl)
        self.wait_timeout = wait_timeout
        self.waiting_since: float | None = None
        self.hold_ms: int | None = None
        self.flight: Flight | None = None
        self.settled = False
        #: Whether its lost lease was reported: the keeper and a failed completion may
        #: both find it lost, and it is reported once.
        self.reported_lost = False

    def running(self, created: int) -> bytes:
        return self.engine.sealer.running(
            self.slot.rid,
            self.kind,
            self.scope,
            self.key,
            self.token,
            self.fingerprint,
            created,
            self.door,
            self.hold_ms,
        )
