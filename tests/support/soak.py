"""Soak: mixed traffic against gunicorn (4 workers), then exactly-once assertions.

    python -m tests.support.soak --duration 60        # or: make soak DURATION=60

Starts a private Redis and gunicorn on the test project, and for ``--duration``
seconds ``--clients`` threads send a mix of requests to ``POST /db/`` (a view
behind the middleware that inserts one database row per execution):

``new``        a fresh key;
``retry``      an accepted key again, same body: must replay the original;
``duplicate``  a fresh key sent by three connections at once: one runs, two replay;
``mismatch``   an accepted key with a different body: must be 422.

Then it checks that action executions (rows) == distinct accepted keys (no key
ran twice, none ran without a response), that no response was a 5xx, and that
every replay is byte-identical (status and body) to its key's original. It prints
the figures and exits 1 on any violation. ``tests/test_soak.py`` runs 5 seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django_idempotency.testing import RedisServer

from .servers import migrate, serve, server_env

PATH = "/db/"
MIX = {"new": 40, "retry": 25, "duplicate": 20, "mismatch": 15}


@dataclass(frozen=True)
class Reply:
    kind: str
    key: str
    status: int
    body: bytes
    replayed: bool
    seconds: float


@dataclass
class Report:
    """What a soak sent, got and found wrong."""

    duration: float
    replies: list[Reply]
    executions: int
    executions_per_key: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def by_status(self) -> Counter[int]:
        return Counter(r.status for r in self.replies)

    @property
    def by_kind(self) -> Counter[str]:
        return Counter(r.kind for r in self.replies)

    @property
    def accepted(self) -> set[str]:
        return {r.key for r in self.replies if 200 <= r.status < 300}

    def figures(self) -> str:
        latencies = sorted(r.seconds for r in self.replies)
        p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
        replays = sum(r.replayed for r in self.replies)
        lines = [
            f"requests          {len(self.replies):,} in {self.duration:.1f} s "
            f"({len(self.replies) / self.duration:,.0f} req/s)",
            "by kind           " + ", ".join(f"{k} {n:,}" for k, n in sorted(self.by_kind.items())),
            "by status         "
            + ", ".join(f"{s}: {n:,}" for s, n in sorted(self.by_status.items())),
            f"replays           {replays:,}",
            f"accepted keys     {len(self.accepted):,}",
            f"executions        {self.executions:,}",
            f"latency           p50 {statistics.median(latencies or [0]) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms",
            f"problems          {len(self.problems)}",
        ]
        return "\n".join(lines + [f"  - {p}" for p in self.problems[:20]])


def send(port: int, kind: str, key: str, body: bytes) -> Reply:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            PATH,
            body=body,
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        content = response.read()
        replayed = response.getheader("Idempotent-Replayed") == "true"
        return Reply(kind, key, response.status, content, replayed, time.monotonic() - started)
    finally:
        conn.close()


def body_for(key: str, variant: int = 0) -> bytes:
    return json.dumps({"key": key, "amount": 10 + variant}).encode()


class Traffic:
    """The client threads and what they share: the accepted keys and the replies."""

    def __init__(self, port: int, seed: int) -> None:
        self.port = port
        self.seed = seed
        self.replies: list[Reply] = []
        self.accepted: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def record(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)
            for reply in replies:
                if reply.status == 201 and not reply.replayed:
                    self.accepted.append(reply.key)

    def pick_accepted(self, rng: random.Random) -> str | None:
        with self.lock:
            return rng.choice(self.accepted) if self.accepted else None

    def client(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        kinds, weights = zip(*MIX.items(), strict=True)
        while not self.stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            old = self.pick_accepted(rng) if kind in ("retry", "mismatch") else None
            if kind == "retry" and old is not None:
                self.record(send(self.port, kind, old, body_for(old)))
            elif kind == "mismatch" and old is not None:
                self.record(send(self.port, kind, old, body_for(old, variant=1)))
            elif kind == "duplicate":
                self.record(*self.duplicates(uuid.uuid4().hex, 3))
            else:
                key = uuid.uuid4().hex
                self.record(send(self.port, "new", key, body_for(key)))

    def duplicates(self, key: str, n: int) -> list[Reply]:
        barrier = threading.Barrier(n)
        replies: list[Reply] = []

        def one() -> None:
            barrier.wait()
            reply = send(self.port, "duplicate", key, body_for(key))
            with self.lock:
                replies.append(reply)

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return replies


def check(replies: list[Reply], per_key: dict[str, int]) -> list[str]:
    """Every violation of exactly-once, as one line each."""
    problems: list[str] = []
    five = [r for r in replies if r.status >= 500]
    if five:
        problems.append(f"{len(five)} 5xx responses, e.g. {five[0].status} {five[0].body[:200]!r}")
    by_key: dict[str, list[Reply]] = defaultdict(list)
    for reply in replies:
        by_key[reply.key].append(reply)
    accepted = {r.key for r in replies if 200 <= r.status < 300}
    for key, count in per_key.items():
        if count != 1:
            problems.append(f"key {key} ran {count} times")
    if set(per_key) != accepted:
        ran_silently = set(per_key) - accepted
        never_ran = accepted - set(per_key)
        problems.append(
            f"executed keys != accepted keys: {len(ran_silently)} ran without a 2xx, "
            f"{len(never_ran)} accepted without running"
        )
    for key, got in by_key.items():
        originals = [r for r in got if 200 <= r.status < 300 and not r.replayed]
        if len(originals) > 1:
            problems.append(f"key {key} got {len(originals)} non-replayed 2xx responses")
        for reply in got:
            if reply.kind == "mismatch" and reply.status != 422:
                problems.append(f"mismatch on {key} answered {reply.status}, not 422")
            if reply.replayed and (
                not originals
                or (reply.status, reply.body) != (originals[0].status, originals[0].body)
            ):
                problems.append(f"replay of {key} differs from its original: {reply.body!r}")
    return problems


def executions(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT key, COUNT(*) FROM tests_execution GROUP BY key").fetchall()
    return {str(key): int(n) for key, n in rows}


@contextmanager
def stack(workers: int, redis_url: str | None) -> Iterator[tuple[int, Path]]:
    """Redis (unless given), a migrated SQLite database and gunicorn; yields (port, db)."""
    with contextlib.ExitStack() as resources:
        if redis_url is None:
            redis_url = resources.enter_context(RedisServer()).url
        tmp = resources.enter_context(tempfile.TemporaryDirectory(prefix="idempotency-soak-"))
        db_path = Path(tmp) / "soak.sqlite3"
        env = server_env(redis_url, db_path)
        migrate(env)
        port = resources.enter_context(serve("gunicorn", env, workers=workers))
        yield port, db_path


def soak(
    duration: float,
    *,
    clients: int = 8,
    workers: int = 4,
    seed: int = 0,
    redis_url: str | None = None,
) -> Report:
    """Run the soak and return its report (``report.problems`` empty when all held)."""
    with stack(workers, redis_url) as (port, db_path):
        traffic = Traffic(port, seed)
        threads = [threading.Thread(target=traffic.client, args=(i,)) for i in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(duration)
        traffic.stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        per_key = executions(db_path)
    report = Report(elapsed, traffic.replies, sum(per_key.values()), per_key)
    report.problems = check(report.replies, per_key)
    if report.executions != len(report.accepted):
        report.problems.append(
            f"executions ({report.executions}) != distinct accepted keys ({len(report.accepted)})"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of traffic (60).")
    parser.add_argument("--clients", type=int, default=8, help="Client threads (8).")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (4).")
    parser.add_argument("--seed", type=int, default=0, help="Random seed of the mix (0).")
    args = parser.parse_args(argv)
    report = soak(args.duration, clients=args.clients, workers=args.workers, seed=args.seed)
    print(report.figures())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
