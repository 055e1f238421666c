"""``idempotency-conformance`` against real servers this test starts (gunicorn, uvicorn).

Our middleware passes every row; a plain Django view fails exactly-once; a server that
answers concurrent duplicates with 409 is reported as rejecting instead of waiting; a
server whose fingerprint ignores the body fails the changed-body row. The tool runs as
a user runs it, ``python -m django_idempotency.conformance``, in a process of its own.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import json
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_idempotency.conformance import main
from django_idempotency.testing import RedisServer
from django_idempotency.testing.promises import (
    CHANGED,
    DUPLICATES,
    EXACTLY_ONCE,
    PROMISES,
    SIDE_EFFECTS,
)

from .support.servers import ROOT, migrate, serve_process, server_env

CONCURRENCY = 20
BODY = json.dumps({"amount": 1999, "currency": "eur"})


def conformance(url: str, *args: str) -> tuple[int, str, str]:
    """Run the tool on ``url``; (exit status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "django_idempotency.conformance", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def report(url: str, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """The tool's exit status and its JSON rows by promise name."""
    status, out, err = conformance(
        url, "--data", BODY, "--concurrency", str(CONCURRENCY), "--json", *args
    )
    assert out, err
    rows = {row["name"]: row for row in json.loads(out)["promises"]}
    assert list(rows) == list(PROMISES)
    return status, rows


def verdicts(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: row["verdict"] for name, row in rows.items()}


@contextlib.contextmanager
def project_server(
    redis_server: RedisServer, tmp_path: Path, kind: str, workers: int, threads: int = 1
) -> Iterator[tuple[str, Path]]:
    """The test project under ``kind``; yields its base URL and its database file."""
    db = tmp_path / f"{kind}.sqlite3"
    env = server_env(redis_server.url, db)
    migrate(env)
    with serve_process(kind, env, workers, threads) as (port, _):
        yield f"http://127.0.0.1:{port}", db


@pytest.fixture(scope="module")
def threaded(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gunicorn process with enough threads for every duplicate at once.

    One process, so the rejecting view's first request hears every 409 its duplicates get.
    """
    with project_server(
        redis_server, tmp_path_factory.mktemp("threaded"), "gunicorn", 1, CONCURRENCY + 8
    ) as (url, _):
        yield url


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "workers"), [("gunicorn", 4), ("uvicorn", 2)])
def test_our_middleware_passes_every_row(
    redis_server: RedisServer, tmp_path: Path, kind: str, workers: int
) -> None:
    with project_server(redis_server, tmp_path, kind, workers) as (url, db):
        status, rows = report(f"{url}/db/")
    assert status == 0
    expected = dict.fromkeys(PROMISES, "pass")
    expected[SIDE_EFFECTS] = "not applicable"  # nothing counts side effects over HTTP
    assert verdicts(rows) == expected
    # What the rows claim, seen from the database: each of the two keys that were accepted
    # (the retried one, the concurrent one) ran the view once, across the worker processes.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM tests_execution")]
    assert len(keys) == len(set(keys)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/decorator/", "/cbv/", "/drf/", "/api/charges/", "/async/"])
def test_every_door_passes_every_row(threaded: str, path: str) -> None:
    """The decorator (sync, class-based, async) and the DRF mixin (APIView, viewset)."""
    status, rows = report(f"{threaded}{path}")
    assert status == 0, rows
    expected = dict.fromkeys(PROMISES, "pass")
    expected[SIDE_EFFECTS] = "not applicable"
    assert verdicts(rows) == expected


def executions(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return int(json.load(response)["executions"])


@pytest.mark.slow
def test_plain_view_fails_exactly_once(threaded: str) -> None:
    url = f"{threaded}/conformance/unprotected/"
    before = executions(url)
    status, rows = report(url)
    assert status == 1
    assert rows[EXACTLY_ONCE]["verdict"] == "fail"
    assert rows[EXACTLY_ONCE]["reason"] == "ran-more-than-once"
    # Every request it sent ran; that is all it sent: 4 checks in turn, then the duplicates.
    assert executions(url) - before == 4 + CONCURRENCY


@pytest.mark.slow
def test_rejecting_server_is_reported_as_rejecting(threaded: str) -> None:
    url = f"{threaded}/conformance/rejecting/?hold={CONCURRENCY - 1}"
    status, rows = report(url)
    assert status == 1
    assert rows[EXACTLY_ONCE]["verdict"] == "pass"
    assert rows[DUPLICATES]["verdict"] == "fail"
    assert rows[DUPLICATES]["reason"] == "rejected-instead-of-waiting"
    statuses = [e["response"]["status"] for e in rows[DUPLICATES]["evidence"]]
    assert statuses == [201, 409]  # the first response, and a duplicate's
    # Told that rejecting is what this endpoint promises, the tool passes it.
    status, rows = report(url, "--conflict", "reject")
    assert status == 0, rows
    assert rows[DUPLICATES]["verdict"] == "pass"


@pytest.mark.slow
def test_body_ignoring_server_fails_the_changed_body_row(threaded: str) -> None:
    status, rows = report(f"{threaded}/conformance/body-ignoring/")
    assert status == 1
    failed = {name for name, verdict in verdicts(rows).items() if verdict == "fail"}
    assert failed == {CHANGED}
    assert rows[CHANGED]["reason"] == "accepted-changed-body"
    first, changed = rows[CHANGED]["evidence"]
    assert first["request"]["body"] != changed["request"]["body"]
    assert first["response"]["body"] == changed["response"]["body"]


@pytest.mark.slow
def test_text_report_has_one_row_per_promise_and_shows_the_evidence(threaded: str) -> None:
    status, out, _ = conformance(f"{threaded}/conformance/unprotected/", "--data", BODY)
    assert status == 1
    rows = [line for line in out.splitlines() if line[:4] in ("PASS", "FAIL", "N/A ")]
    assert [line.split()[1] for line in rows] == list(PROMISES)
    # The failed replay row shows both responses: two different bodies.
    bodies = [line for line in out.splitlines() if line.strip().startswith("body:")]
    assert len(set(bodies[:2])) == 2


@pytest.mark.slow
def test_credentials_never_appear_in_the_report(threaded: str) -> None:
    secret = "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    url = f"{threaded}/conformance/unprotected/"
    for extra in ([], ["--json"]):
        status, out, _ = conformance(
            url, "--data", BODY, "--header", f"Authorization: {secret}", *extra
        )
        assert status == 1 and out  # failed rows, with their evidence
        assert secret.split()[1] not in out


@pytest.mark.no_redis
@pytest.mark.parametrize(
    "args",
    [
        ["ftp://127.0.0.1/x"],
        ["http://127.0.0.1:1/x", "--data", "{not json"],
        ["http://127.0.0.1:1/x", "--concurrency", "0"],
        ["http://127.0.0.1:1/x", "--header", "no colon"],
        ["http://127.0.0.1:1/x", "--timeout", "0"],
    ],
)
def test_usage_errors_exit_2_before_sending_anything(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert "error:" in err and out == ""


@pytest.mark.no_redis
def test_console_script_points_at_main() -> None:
    """``idempotency-conformance`` (setup.cfg's console script) is this module's main."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = dict(
        line.split(" = ", 1)
        for line in config["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    module, _, name = scripts["idempotency-conformance"].partition(":")
    assert getattr(importlib.import_module(module), name) is main
