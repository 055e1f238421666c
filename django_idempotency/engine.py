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


@dataclass(eq=False)
class Claim:
    """A claimed record: the action may run; :meth:`Engine.complete` or ``release`` follows."""

    slot: Slot
    kind: Kind
    door: Door
    #: Scope and key as the caller gave them (str or bytes: what events and logs
    #: report), then as stored.
    given: tuple[str | bytes, str | bytes]
    scope: bytes
    key: bytes
    fingerprint: bytes
    token: bytes
    lease: Lease
    created_ms: int
    flight: Flight | None = None
    settled: bool = False
    #: Whether its lost lease was reported: the keeper and a failed completion may both
    #: find it lost, and it is reported once.
    reported_lost: bool = False


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

    def verified(self, who: Attempt | Claim, raw: bytes) -> Record:
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
        attempt: Attempt,
        reply: ClaimReply,
        deadline: float,
        conflict: Conflict,
    ) -> Found | float:
        """A final record found, or how long to wait; raises the refusals."""
        assert reply.record is not None
        record = self.verified(attempt, reply.record)
        since = attempt.waiting_since
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
        retry_after = max(1, -(-reply.lease_left_ms // 1000))
        if conflict is Conflict.REJECT:
            raise RequestInProgress(
                "A request with this key is still being processed; retry later.",
                retry_after=retry_after,
            )
        left = deadline - time.monotonic()
        if left <= 0:
            raise IdempotencyTimeout(
                "The first request with this key did not finish within "
                f"{attempt.wait_timeout:g} s.",
                retry_after=retry_after,
                waited=waited,
            )
        if since is None:
            self._start_waiting(attempt, retry_after)
        # Every wait ends when the owner's lease would run out, so an owner that crashed
        # (and publishes nothing) is noticed then, whether or not this is the first wait:
        # a live owner has renewed by then and the waiter waits again.
        return min(left, max(reply.lease_left_ms / 1000, MIN_RECHECK))

    def _start_waiting(self, attempt: Attempt, retry_after: int) -> None:
        with self._lock:
            if self.max_waiters is not None and self._waiting >= self.max_waiters:
                raise RequestInProgress(
                    "Too many requests are waiting for concurrent duplicates in this "
                    "process; retry later.",
                    retry_after=retry_after,
                )
            self._waiting += 1
        attempt.waiting_since = time.monotonic()

    def _stop_waiting(self, attempt: Attempt) -> None:
        if attempt.waiting_since is not None:
            attempt.waiting_since = None
            with self._lock:
                self._waiting -= 1

    def _before_following(self, attempt: Attempt, conflict: Conflict) -> float:
        """A local follower about to wait: refused in reject mode or past ``MAX_WAITERS``."""
        retry_after = max(1, -(-attempt.lease_ms // 1000))
        if conflict is Conflict.REJECT:
            raise RequestInProgress(
                "A request with this key is still being processed; retry later.",
                retry_after=retry_after,
            )
        self._start_waiting(attempt, retry_after)
        assert attempt.waiting_since is not None
        return attempt.waiting_since

    def _claimed(self, attempt: Attempt, created: int) -> Claim:
        lease = Lease(
            self.store,
            attempt.slot,
            attempt.token,
            attempt.lease_ms,
            on_lost=lambda: self.lease_lost(claim),
        )
        claim = Claim(
            slot=attempt.slot,
            kind=attempt.kind,
            door=attempt.door,
            given=attempt.given,
            scope=attempt.scope,
            key=attempt.key,
            fingerprint=attempt.fingerprint,
            token=attempt.token,
            lease=lease,
            created_ms=created,
        )
        self.keeper.hold(lease)
        return claim

    def _follow_or_lead(self, attempt: Attempt) -> tuple[Flight | None, bool]:
        joined = self.flights.join(attempt.slot.rid, attempt.fingerprint)
        if joined is None:
            return None, True
        return joined

    def _followed(self, attempt: Attempt, outcome: Any, started: float) -> Found | None:
        """What a follower got from its flight: a record, or ``None`` to try again."""
        if outcome is None:
            raise IdempotencyTimeout(
                "The first request with this key did not finish within "
                f"{attempt.wait_timeout:g} s.",
                retry_after=max(1, -(-attempt.lease_ms // 1000)),
                waited=time.monotonic() - started,
            )
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
        attempt = Attempt(self, kind, door, scope, key, fingerprint, lock_ttl, wait_timeout)
        if outcome_unknown is OutcomeUnknownPolicy.REFUSE:
            if ttl is None:
                raise TypeError('outcome_unknown="refuse" needs the ttl its record is kept')
            attempt.hold_ms = ms(ttl)
        deadline = time.monotonic() + attempt.wait_timeout
        while True:
            flight, leading = self._follow_or_lead(attempt)
            if not leading:
                assert flight is not None
                started = self._before_following(attempt, conflict)
                try:
                    with events.span("wait", attempt.door):
                        outcome = yield Follow(flight, deadline - started)
                finally:
                    self._stop_waiting(attempt)
                found = self._followed(attempt, outcome, started)
                if found is not None:
                    return found
                continue
            try:
                got = yield from self._remote(attempt, deadline, conflict)
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
        attempt = self.asking(kind, door, scope, key)
        raw = yield Call(StoreOp.READ, "read", (attempt.slot,))
        return None if raw is None else self.verified(attempt, raw)

    def asking(
        self, kind: Kind, door: Door, scope: str | bytes, key: str | bytes, fingerprint: bytes = b""
    ) -> Attempt:
        """One who looks at the record of ``key`` without claiming it, to :meth:`verified`
        what it finds (an empty ``fingerprint``: any request's record is its own)."""
        return Attempt(self, kind, door, scope, key, fingerprint, 1, 0)

    def _remote(self, attempt: Attempt, deadline: float, conflict: Conflict) -> Flow[Claim | Found]:
        notifier = self.store.notifier
        try:
            while True:
                position = notifier.position()
                created = now_ms()
                with events.span("claim", attempt.door):
                    running = attempt.running(created)
                    claim = Call(StoreOp.CLAIM, "claim", (attempt.slot, running, attempt.lease_ms))
                    # A claim queues for a busy pool until the caller's wait deadline.
                    reply = yield from self._patient(claim, max(deadline, time.monotonic() + 1))
                if reply.claimed:
                    return self._claimed(attempt, created)
                decision = self._judge(attempt, reply, deadline, conflict)
                if isinstance(decision, Found):
                    return decision
                with events.span("wait", attempt.door):
                    yield Listen(attempt.slot, position, decision)
        finally:
            self._stop_waiting(attempt)

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


class Attempt:
    """One caller's way through the claim: who, for what, and since when it waits.

    Made by the engine only (:meth:`Engine.acquiring`, :meth:`Engine.asking`).
    """

    __slots__ = (
        "door",
        "engine",
        "fingerprint",
        "given",
        "hold_ms",
        "key",
        "kind",
        "lease_ms",
        "scope",
        "slot",
        "token",
        "wait_timeout",
        "waiting_since",
    )

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
