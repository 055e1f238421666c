"""What every part of ``make bench`` shares: the code under test, servers, clocks, logging.

A :class:`Code` is one checkout of ``django_idempotency``; servers and subprocesses run
with its private home as working directory and only ``PYTHONPATH`` entry, so nothing
else can shadow the package. :class:`Server` starts gunicorn or uvicorn on a free port
and knows the pids of its worker processes.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Code:
    """One django_idempotency checkout under test.

    ``home`` holds two symlinks, ``django_idempotency`` (the checkout's) and
    ``benchmarks`` (this one). A variant's own directory comes after ``home`` on the
    path, so a variant may bring packages of its own: ``pip install --target DIR
    hiredis`` plus a ``DIR/django_idempotency`` symlink measures the ``fast`` extra.
    """

    label: str
    source: Path
    home: Path

    @property
    def pythonpath(self) -> str:
        if self.label == "HEAD":
            return str(self.home)
        return os.pathsep.join((str(self.home), str(self.source.parent)))

    @property
    def suffix(self) -> str:
        return "" if self.label == "HEAD" else f" [{self.label}]"


def code_paths(variants: Sequence[str]) -> list[Code]:
    """HEAD (this checkout) and every ``NAME=PATH`` variant."""
    specs = [("HEAD", str(ROOT))] + [tuple(v.partition("=")[::2]) for v in variants]
    codes = []
    for label, path in specs:
        source = Path(path).resolve() / "django_idempotency"
        if not label or not source.is_dir():
            raise SystemExit(f"--variant {label}={path}: PATH/django_idempotency is missing")
        home = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
        atexit.register(shutil.rmtree, home, True)  # symlinks only: the targets stay
        (home / "django_idempotency").symlink_to(source)
        (home / "benchmarks").symlink_to(ROOT / "benchmarks")
        codes.append(Code(label, source, home))
    return codes


def check_code(code: Code, reported: str) -> None:
    """Stop when a server or subprocess imported another django_idempotency than ``code``."""
    if Path(reported).resolve() != code.source.resolve():
        raise SystemExit(f"{code.label}: expected {code.source}, but {reported} was imported")


def env_for(code: Code, redis_url: str, stack: str, **extra: str) -> dict[str, str]:
    """The environment of a server or subprocess measuring ``code`` on ``stack``."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        BENCH_STACK=stack,
        REDIS_URL=redis_url,
        PYTHONPATH=code.pythonpath,
        PYTHONDONTWRITEBYTECODE="1",
        **extra,
    )
    return env


def raise_fd_limit(want: int = 8192) -> None:
    """Storms hold a thousand sockets in the client and in each server: lift the soft limit.

    Children (the servers) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """gunicorn (``kind="wsgi"``) or uvicorn (``"asgi"``) on a free port."""

    def __init__(self, code: Code, env: dict[str, str], kind: str, *args: str) -> None:
        self.code = code
        self.kind = kind
        self.port = free_port()
        if kind == "wsgi":
            cmd = [
                str(BIN / "gunicorn"),
                "benchmarks.wsgi:application",
                "-b",
                f"127.0.0.1:{self.port}",
                "--backlog",
                "2048",
                "--timeout",
                "60",
                "--log-level",
                "warning",
                *args,
            ]
        else:
            cmd = [
                str(BIN / "uvicorn"),
                "benchmarks.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backlog",
                "2048",
                "--log-level",
                "warning",
                "--no-access-log",
                *args,
            ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=code.home)

    def ready(self) -> Server:
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.kind} server exited with {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/ping/")
                check_code(self.code, json.loads(conn.getresponse().read())["code"])
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.kind} server did not start") from None
                time.sleep(0.1)

    def workers(self) -> list[int]:
        """The pids serving requests: the master's children, or the process itself."""
        found = children(self.proc.pid)
        # uvicorn with one worker serves in its own process; gunicorn never does.
        return found or [self.proc.pid]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


@contextlib.contextmanager
def servers(
    specs: Mapping[str, tuple[Code, dict[str, str], str, tuple[str, ...]]],
) -> Iterator[dict[str, Server]]:
    """Start every server at once (``name: (code, env, kind, args)``), wait, stop them."""
    started: dict[str, Server] = {}
    try:
        for name, (code, env, kind, args) in specs.items():
            started[name] = Server(code, env, kind, *args)
        yield {name: server.ready() for name, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads), from /proc."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def redis_cpu_seconds(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(dist)
    except PackageNotFoundError:
        return "not installed"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mark(ok: bool) -> str:
    return "MET" if ok else "MISSED"
