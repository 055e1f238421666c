"""The Redis side: connection, key layout, record format and the Lua script calls.

Key layout
----------
One idempotency record is one Redis string; its waiters share one short list::

    {prefix}:{<id>}      the record (string)
    {prefix}:{<id>}:w    the wake list (one element, pushed on completion or release)

``<id>`` is 128 bits (22 base64url characters) of SHA-256 over the door (``h`` for HTTP, ``r`` for
``run()``), the scope and the client's key, each length-prefixed. Client input
never reaches a Redis key name, so keys with ``:``, ``*`` or arbitrary bytes
neither collide nor match another scope's SCAN pattern. The braces make ``<id>``
the hash tag, so a record and its wake list share one Cluster slot.

Record format
-------------
A header line of space-separated ASCII fields, a newline, then the payload::

    <state> <owner> <fingerprint> <created_ms> <elapsed_ms> <door> <scope> <key>\\n<payload>

``state`` is ``running``, ``done``, ``error`` or ``unreplayable``; ``owner`` is the
fencing token while running, else ``-``; ``fingerprint`` is ``-`` when not
compared; ``scope`` and ``key`` are percent-encoded so they hold no spaces. One
string (not a hash) keeps a stored record at body size plus a small constant.

Scripts (``lua/*.lua``), each one atomic step and one round trip
----------------------------------------------------------------
``claim``     no record: create it running with our token and a lease (ms TTL);
              otherwise report mismatch / running (with lease left) / the record.
``complete``  if our token still owns the record: write the final record with its
              TTL and push a copy of it as the wake token (waiters need no second
              read). A late finisher writes nothing.
``release``   if our token owns it: delete the record and push the wake token.
``renew``     if our token owns it: extend the lease.

Waiters block on ``BLMOVE wake wake`` (the same list as source and destination):
the single element rotates, so every blocked waiter is woken by one push, and a
waiter arriving after the push returns at once while the list lives (a few
seconds: it only bridges a waiter's claim and its BLMOVE). A release pushes ``1``:
the waiters claim again.

Cluster, Sentinel and a full Redis
----------------------------------
Every script names both its keys in ``KEYS`` and they share one hash tag, so the
scripts run unchanged on Redis Cluster. ``RedisCluster`` refuses scripts inside a
pipeline, so there :meth:`RedisStore.renew` sends one ``EVALSHA`` per lease.

After a Sentinel failover a pooled connection may still point at the demoted
primary, which now refuses writes (``READONLY``). Every script's first write is
the one refused, so nothing was written: the store drops the pool's idle
connections (the next one asks the Sentinel for the new primary) and sends the
command once more. An ``OOM`` refusal (``maxmemory`` reached under
``noeviction``) is raised as :class:`RedisFull`, whose message says so.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

RUNNING = "running"
DONE = "done"
ERROR = "error"
UNREPLAYABLE = "unreplayable"
STATES = (RUNNING, DONE, ERROR, UNREPLAYABLE)

HTTP_DOOR = "h"
RUN_DOOR = "r"

#: What a failed Redis call raises; callers map it to fail-closed or fail-open.
RedisError = redis.exceptions.RedisError


class RedisFull(redis.exceptions.ResponseError):
    """Redis refused a write because it is at ``maxmemory`` and may not evict (``noeviction``)."""


_R = TypeVar("_R")


def _demoted(exc: RedisError) -> bool:
    """Whether ``exc`` is a read-only replica refusing a write: the server was demoted.

    Redis 6 reports a write refused inside a script as a script error quoting
    ``-READONLY``; a plain command's ``READONLY`` reply is turned into a
    ``ConnectionError`` by redis-py's Sentinel connection.
    """
    if isinstance(exc, redis.exceptions.ConnectionError):
        return isinstance(exc.__context__, redis.exceptions.ReadOnlyError)
    return isinstance(exc, redis.exceptions.ResponseError) and "READONLY" in str(exc)


def _full(exc: RedisError) -> bool:
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.exceptions.ResponseError) and "OOM command not allowed" in str(exc)
    )


def _load_script(name: str) -> str:
    return resources.files("django_idempotency").joinpath(f"lua/{name}.lua").read_text()


def record_id(door: str, scope: str | bytes, key: str | bytes) -> str:
    """The hashed id of one record: no two (door, scope, key) triples share one."""
    digest = hashlib.sha256()
    for part in (door, scope, key):
        raw = part.encode() if isinstance(part, str) else bytes(part)
        digest.update(b"%d:" % len(raw))
        digest.update(raw)
    return compact_digest(digest)


def compact_digest(digest: Any) -> str:
    """128 bits of ``digest`` as 22 URL-safe base64 characters (shorter than hex in Redis)."""
    return base64.urlsafe_b64encode(digest.digest()[:16]).rstrip(b"=").decode()


def now_ms() -> int:
    """Wall-clock milliseconds, as stored in records."""
    return int(time.time() * 1000)


def _enc(value: str | bytes) -> str:
    # "-" stands for empty, so a literal "-" is escaped (quote() never escapes it).
    if not value:
        return "-"
    encoded = quote(value, safe="")
    return "%2D" if encoded == "-" else encoded


def _dec(field: bytes) -> str:
    if field == b"-":
        return ""
    return unquote_to_bytes(field).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Record:
    """A parsed record, as read from Redis."""

    state: str
    owner: str
    fingerprint: str
    created_ms: int
    finished_ms: int | None
    door: str
    scope: str
    key: str
    payload: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Record:
        """Parse the stored bytes; raise ``ValueError`` when they are not a record."""
        header, _, payload = raw.partition(b"\n")
        fields = header.split(b" ")
        if len(fields) != 8 or fields[0].decode() not in STATES:
            raise ValueError("not an idempotency record")
        state, owner, fp, t0, t1, door, scope, key = fields
        return cls(
            state=state.decode(),
            owner=owner.decode(),
            fingerprint=fp.decode(),
            created_ms=int(t0),
            finished_ms=None if t1 == b"-" else int(t0) + int(t1),
            door=door.decode(),
            scope=_dec(scope),
            key=_dec(key),
            payload=payload,
        )


@dataclass(frozen=True)
class Slot:
    """Where one record lives: its Redis keys plus what its header repeats."""

    record_key: str
    wake_key: str
    door: str
    scope: str | bytes
    key: str | bytes

    # Cached: a slot writes its header twice (claim, then complete).
    @functools.cached_property
    def scope_field(self) -> str:
        """The scope as written in a record header."""
        return _enc(self.scope)

    @functools.cached_property
    def key_field(self) -> str:
        """The key as written in a record header."""
        return _enc(self.key)

    def header(
        self, state: str, owner: str, fingerprint: str, created_ms: int, finished_ms: int | None
    ) -> bytes:
        """The header line of a record in this slot."""
        # Elapsed rather than absolute: a few digits instead of thirteen, per record.
        t1 = "-" if finished_ms is None else str(finished_ms - created_ms)
        return (
            f"{state} {owner} {fingerprint or '-'} {created_ms} {t1} "
            f"{self.door} {self.scope_field} {self.key_field}\n"
        ).encode()


@dataclass(frozen=True)
class Claim:
    """What the claim script found: ``claimed``, ``mismatch``, ``running`` or ``stored``."""

    outcome: str
    lease_left_ms: int = 0
    record: Record | None = None


class RedisStore:
    """All Redis I/O of the app; one instance per Redis client."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._claim = self._register("claim")
        self._complete = self._register("complete")
        self._release = self._register("release")
        self._renew = self._register("renew")
        self._block_cap = _block_cap(client)

    def _register(self, name: str) -> Script:
        return self.client.register_script(_load_script(name))  # type: ignore[no-any-return]

    def _call(self, func: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """``func(*args, **kwargs)``, once more after a demoted primary refused it.

        A refused write wrote nothing (each script's first write is the refused one),
        so sending it again to the new primary is safe. An ``OOM`` refusal is raised
        as :class:`RedisFull`.
        """
        for retry in (False, True):
            try:
                return func(*args, **kwargs)
            except RedisError as exc:
                if _full(exc):
                    raise RedisFull(
                        "Redis is at maxmemory and refuses writes (maxmemory-policy "
                        "noeviction): no idempotency record can be created or stored until "
                        "memory is freed or maxmemory is raised"
                    ) from exc
                if retry or not _demoted(exc):
                    raise
            # Idle connections may still point at the demoted primary; reconnecting
            # through the Sentinel finds the new one.
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                pool.disconnect(inuse_connections=False)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- key layout ---------------------------------------------------------------------

    def slot(self, door: str, scope: str | bytes, key: str | bytes) -> Slot:
        """The keys of the record for ``key`` in ``scope`` behind ``door``."""
        rid = record_id(door, scope, key)
        base = f"{self.prefix}:{{{rid}}}"
        return Slot(base, base + ":w", door, scope, key)

    @property
    def record_pattern(self) -> str:
        """SCAN MATCH pattern selecting every record (and no wake list)."""
        return f"{self.prefix}:{{*}}"

    # -- scripts ------------------------------------------------------------------------

    def claim(
        self, slot: Slot, token: str, fingerprint: str, lease_ms: int, created_ms: int
    ) -> Claim:
        """Run the claim script: one round trip."""
        running = slot.header(RUNNING, token, fingerprint, created_ms, None)
        reply = self._call(
            self._claim,
            keys=[slot.record_key, slot.wake_key],
            args=[running, fingerprint or "-", lease_ms],
        )
        outcome = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if outcome == "running":
            return Claim(outcome, lease_left_ms=max(int(reply[1]), 0))
        if outcome == "stored":
            raw = reply[1] if isinstance(reply[1], bytes) else str(reply[1]).encode()
            return Claim(outcome, record=Record.parse(raw))
        return Claim(outcome)

    def complete(self, slot: Slot, token: str, record: bytes, ttl_ms: int, wake_ms: int) -> bool:
        """Store the final record if ``token`` still owns the slot; wake waiters."""
        keys = [slot.record_key, slot.wake_key]
        return bool(self._call(self._complete, keys=keys, args=[token, record, ttl_ms, wake_ms]))

    def release(self, slot: Slot, token: str, wake_ms: int) -> bool:
        """Delete the running record if ``token`` owns it; wake waiters."""
        keys = [slot.record_key, slot.wake_key]
        return bool(self._call(self._release, keys=keys, args=[token, wake_ms]))

    def renew(self, leases: list[tuple[str, str, int]]) -> list[bool]:
        """Extend many leases ``(record_key, token, lease_ms)`` in one pipelined round trip.

        On Redis Cluster, which refuses scripts in a pipeline, one round trip per lease.
        """
        if len(leases) == 1 or isinstance(self.client, RedisCluster):
            return [
                bool(self._call(self._renew, keys=[record_key], args=[token, ms]))
                for record_key, token, ms in leases
            ]

        def pipelined() -> list[bool]:
            pipe = self.client.pipeline(transaction=False)
            for record_key, token, ms in leases:
                self._renew(keys=[record_key], args=[token, ms], client=pipe)
            return [bool(r) for r in pipe.execute()]

        # Renewing is idempotent, so the whole pipeline may be sent again.
        return self._call(pipelined)

    def wait(self, slot: Slot, timeout: float) -> Record | bool:
        """Block until the slot's owner completes or releases, or ``timeout`` passes.

        One command, unless the client's socket timeout is shorter than ``timeout``:
        then one per socket timeout, since a block longer than it would look like a
        dead server. Returns the final record when the owner completed, ``True``
        when it released the key, ``False`` on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            # BLMOVE takes fractional seconds; 0 would mean "forever".
            block = max(min(deadline - time.monotonic(), self._block_cap), 0.01)
            try:
                moved = self._call(
                    self.client.blmove, slot.wake_key, slot.wake_key, block, "RIGHT", "LEFT"
                )
            except redis.exceptions.ResponseError as exc:
                # The server changed role under the blocked command (Sentinel failover):
                # report no wake-up, so the caller looks at the record again.
                if str(exc).startswith("UNBLOCKED"):
                    return False
                raise
            if moved is not None:
                return True if moved == b"1" else Record.parse(moved)
            if time.monotonic() >= deadline:
                return False

    def read(self, slot: Slot) -> Record | None:
        """The record in ``slot``, if any."""
        raw = self.client.get(slot.record_key)
        return None if raw is None else Record.parse(raw)


def _block_cap(client: Any) -> float:
    """The longest a blocking command may take on ``client`` before its socket times out."""
    pool = getattr(client, "connection_pool", None) or getattr(client, "nodes_manager", None)
    timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
    if not timeout:
        return float("inf")
    # Leave room for the server's own timer granularity and the network.
    return max(float(timeout) / 2, float(timeout) - 1.0)


# -- connections -------------------------------------------------------------------------

_clients: dict[Any, Any] = {}
_clients_lock = threading.Lock()


def connect(target: str | Callable[[], Any]) -> Any:
    """A Redis client for the ``REDIS`` setting.

    A django-redis cache alias goes through ``get_redis_connection``; a URL through
    ``redis.Redis.from_url``; a factory is called. URL and factory clients are cached
    so every service in the process shares one connection pool.
    """
    if isinstance(target, str) and "://" not in target:
        from django_redis import get_redis_connection  # type: ignore[import-untyped]

        return get_redis_connection(target)
    with _clients_lock:
        client = _clients.get(target)
        if client is None:
            client = redis.Redis.from_url(target) if isinstance(target, str) else target()
            _clients[target] = client
        return client
