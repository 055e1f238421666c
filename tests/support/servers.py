"""Start the test project under a real server (gunicorn or uvicorn) in a subprocess."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop ``proc``: SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """Poll ``check()`` until it returns something true (returned), for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what or check}"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(redis_url: str, db_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.support.settings",
        REDIS_URL=redis_url,
        TEST_DB_PATH=str(db_path),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)  # may name other settings (tests.support.pg_settings)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
    )
    # Write-ahead logging (a property of the file, kept by every later connection): a
    # burst of thousands of writing requests on a busy machine otherwise queues past
    # SQLite's busy timeout and fails with "database is locked", a 500 of the test view.
    with contextlib.closing(sqlite3.connect(env["TEST_DB_PATH"])) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


@contextlib.contextmanager
def serve(kind: str, env: dict[str, str], workers: int = 4, threads: int = 1) -> Iterator[int]:
    """Run ``gunicorn`` (WSGI) or ``uvicorn`` (ASGI) on a free port; yield the port."""
    with serve_process(kind, env, workers, threads) as (port, _):
        yield port


@contextlib.contextmanager
def serve_process(
    kind: str, env: dict[str, str], workers: int = 4, threads: int = 1, app: str | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """:func:`serve`, yielding the port and the server's process.

    ``threads`` > 1 makes gunicorn use its ``gthread`` worker with that many threads;
    ``app`` names another application than the test project's (``module:attribute``).
    """
    port = free_port()
    bin_dir = Path(sys.executable).parent
    if kind == "gunicorn":
        cmd = [
            str(bin_dir / "gunicorn"),
            app or "tests.support.wsgi:application",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "60",
            "--log-level",
            "warning",
        ]
        if threads > 1:
            cmd += ["-k", "gthread", "--threads", str(threads)]
    else:
        cmd = [
            str(bin_dir / "uvicorn"),
            app or "tests.support.asgi:application",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"{kind} exited with {proc.returncode}"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/middleware/")
                conn.getresponse().read()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{kind} did not start"
                time.sleep(0.1)
        yield port, proc
    finally:
        stop(proc, 15)
