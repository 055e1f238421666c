"""What the admin dashboard counts on top of :class:`~.query.Stats`: ages and top scopes.

Both are filled during the same streamed scan as ``stats`` (see
:meth:`~django_idempotency.inventory.Inventory.dashboard`), one entry at a time, in a
fixed amount of memory however many records exist: a count per age bucket, and at most
:data:`SCOPE_COUNTERS` scope counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .query import Entry, Stats

#: Where age buckets are cut (seconds), before the cut at ``TTL``.
AGE_CUTS = (60, 600, 3600, 6 * 3600, 24 * 3600)
#: How many scopes are counted at once: the memory bound of :class:`TopScopes`.
SCOPE_COUNTERS = 1000


def span(ms: int) -> str:
    """A duration as an axis label: ``45 s``, ``10 min``, ``6 h``, ``2 d``, ``2.5 s``."""
    if ms % 1000:
        return f"{ms / 1000:g} s"
    seconds = ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0 and not (unit == "d" and seconds < 172800):
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@dataclass(frozen=True)
class AgeBucket:
    """Records created at most ``upper_ms`` ago (exclusive); ``None``: no upper bound."""

    label: str
    upper_ms: int | None


def age_buckets(ttl_seconds: float) -> tuple[AgeBucket, ...]:
    """The buckets for records that live ``ttl_seconds``: cut at 1 min, 10 min, 1 h, 6 h
    and 24 h where shorter than ``TTL``, then at ``TTL``, and a last one for the records
    older than that (a door given a longer ``ttl``, or ``TTL`` lowered since)."""
    # Rounded, not truncated: 1.001 s is 1000.999... ms as a float.
    ttl_ms = max(round(ttl_seconds * 1000), 1)
    cuts = [c * 1000 for c in AGE_CUTS if c * 1000 < ttl_ms] + [ttl_ms]
    buckets = [AgeBucket(f"< {span(cut)}", cut) for cut in cuts]
    return (*buckets, AgeBucket(f">= {span(ttl_ms)}", None))


class TopScopes:
    """The scopes with the most records, in bounded memory (Misra-Gries).

    At most ``capacity`` scopes are counted. A scope met when all counters are taken
    lowers every counter by one instead (and is dropped), so each count is low by at
    most :attr:`undercount`, and any scope holding more than ``1 / (capacity + 1)`` of
    the records is among those kept. While no more than ``capacity`` distinct scopes are
    met, :attr:`undercount` stays 0 and every count is exact.
    """

    def __init__(self, capacity: int = SCOPE_COUNTERS) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        #: How many times every counter was lowered: the most any count is short by.
        self.undercount = 0

    def add(self, scope: str) -> None:
        """Count one record of ``scope``."""
        if scope in self.counts:
            self.counts[scope] += 1
        elif len(self.counts) < self.capacity:
            self.counts[scope] = 1
        else:
            # Each lowering is paid for by the `capacity` increments before it, so this
            # loop costs O(1) per record on average.
            self.undercount += 1
            self.counts = {s: n - 1 for s, n in self.counts.items() if n > 1}

    @property
    def exact(self) -> bool:
        """Whether the counts are exact (no counter was ever lowered)."""
        return self.undercount == 0

    def top(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` largest counts as ``(scope, count)``, largest first, ties by name."""
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:n]


@dataclass
class Dashboard:
    """Counts by state, kind and door (``stats``), by age bucket, and the top scopes."""

    buckets: tuple[AgeBucket, ...]
    stats: Stats = field(default_factory=Stats)
    scopes: TopScopes = field(default_factory=TopScopes)

    def __post_init__(self) -> None:
        #: Records per bucket, in the buckets' order.
        self.by_age = [0] * len(self.buckets)

    @classmethod
    def for_ttl(cls, ttl_seconds: float) -> Dashboard:
        """An empty dashboard with :func:`age_buckets` for ``ttl_seconds``."""
        return cls(age_buckets(ttl_seconds))

    def bucket_of(self, age_ms: int) -> int:
        """The index of the bucket an age falls in."""
        for i, bucket in enumerate(self.buckets):
            if bucket.upper_ms is None or age_ms < bucket.upper_ms:
                return i
        return len(self.buckets) - 1

    def add(self, entry: Entry, now: int) -> None:
        """Count ``entry`` by age (at ``now``, epoch ms) and scope; ``stats`` counts the rest."""
        self.by_age[self.bucket_of(entry.age_ms(now))] += 1
        self.scopes.add(entry.scope)
