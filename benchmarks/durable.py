"""Durable mode's cost per first-time request, on SQLite and on PostgreSQL.

``benchmarks/run.py`` (``make bench``) runs it and prints its section; alone::

    REDIS_URL=redis://127.0.0.1:6379/0 python benchmarks/durable.py

For each database, one subprocess (Django settings are per process) calls two sync
views in-process, alternating call by call, each first-time (a fresh key per call):

* ``atomic``: ``@idempotent_view`` around a view that inserts one row in
  ``transaction.atomic()`` (what a careful non-durable view does);
* ``durable``: ``@idempotent_view(durable=True)`` around the same insert (the door opens
  the transaction; the result's row is written in it, and the claim looks it up first).

The difference is what durable mode adds: a ``SELECT`` by primary key on the claim and
an ``INSERT`` in the transaction. PostgreSQL is a
throwaway server (``tests/support/postgres.py``); where it cannot run, its row says why.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS, PER_ROUND = (3, 100) if QUICK else (7, 300)


def worker() -> None:
    """In the subprocess: migrate, then time both views; print the medians as JSON."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.http import HttpRequest, JsonResponse
    from django.test import RequestFactory

    from django_idempotency import idempotent_view
    from tests.support.models import Execution

    call_command("migrate", "--noinput", "-v", "0")

    def work(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"execution": Execution.objects.create(key="bench").pk}, status=201)

    @idempotent_view
    def atomic(request: HttpRequest) -> JsonResponse:
        with transaction.atomic():
            return work(request)

    durable = idempotent_view(durable=True)(work)
    factory = RequestFactory()

    def call(view: Any) -> None:
        request = factory.post(
            "/", b"{}", content_type="application/json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
        )
        assert view(request).status_code == 201

    views = {"atomic": atomic, "durable": durable}
    for view in views.values():  # warm up: connections, scripts, caches
        for _ in range(20):
            call(view)
    # Call by call, alternating: a commit's latency on a shared disk swings by
    # milliseconds, and the median of single calls side by side is what stays put.
    timings: dict[str, list[float]] = {name: [] for name in views}
    for _ in range(ROUNDS * PER_ROUND):
        for name, view in views.items():
            start = time.perf_counter()
            call(view)
            timings[name].append((time.perf_counter() - start) * 1e6)
    print(json.dumps({name: statistics.median(ts) for name, ts in timings.items()}))


def measure(env: dict[str, str]) -> dict[str, float] | str:
    done = subprocess.run(
        [sys.executable, __file__, "--worker"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    sys.path.insert(0, str(ROOT))
    results: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite3"
        results["SQLite"] = measure(
            {"DJANGO_SETTINGS_MODULE": "tests.support.settings", "TEST_DB_PATH": str(db)}
        )
    from tests.support.postgres import PostgresServer, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        results["PostgreSQL"] = f"skipped: {reason}"
    else:
        with PostgresServer() as server:
            results["PostgreSQL"] = measure(
                {"DJANGO_SETTINGS_MODULE": "tests.support.pg_settings", **server.environ()}
            )
    lines = [
        "## Durable mode: the cost of a first-time request",
        "",
        "In-process, sync `@idempotent_view` around one `INSERT`, a fresh key per call,",
        f"median of {ROUNDS * PER_ROUND} calls of each, alternating (`benchmarks/durable.py`).",
        "`atomic`: not durable, the view opens `transaction.atomic()`; `durable`: the door",
        "opens it and writes the result's row in it, after looking the key up.",
        "",
        "| database | atomic µs/req | durable µs/req | durable adds | durable / atomic |",
        "|---|---|---|---|---|",
    ]
    for name, got in results.items():
        if isinstance(got, str):
            lines.append(f"| {name} | {got} | | | |")
            continue
        added = got["durable"] - got["atomic"]
        lines.append(
            f"| {name} | {got['atomic']:.0f} | {got['durable']:.0f} | {added:+.0f} µs "
            f"| {got['durable'] / got['atomic']:.2f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        main()
