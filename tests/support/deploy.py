"""The deployment matrix's servers (tests/test_deploy.py): how each is started, and a handle
on one running, its process group, its log, and a restart on the same Redis.

Every server runs in a session (process group) of its own, so stopping it ends its
workers too, whatever its master did with them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .servers import ROOT, free_port, stop

BIN = Path(sys.executable).parent
WSGI = "tests.support.wsgi:application"
ASGI = "tests.support.asgi:application"


def gunicorn_lacks(worker: str) -> str | None:
    """Why this gunicorn cannot run ``-k worker`` (``None``: it can)."""
    import gunicorn
    from gunicorn.workers import SUPPORTED_WORKERS

    if worker in SUPPORTED_WORKERS:
        return None
    return f"gunicorn {gunicorn.__version__} has no {worker} worker (removed upstream)"


@dataclass(frozen=True)
class Config:
    """One server configuration of the matrix."""

    name: str
    #: The command line, given the port.
    argv: Callable[[int], list[str]]
    #: The views it serves: the sync one, and the async one under ASGI.
    paths: tuple[str, ...] = ("/deploy/",)
    #: The server exits when one of its workers is killed (a single process; Hypercorn
    #: stops all its workers when one dies): the retry goes to it started again.
    dies_with_a_worker: bool = False
    #: Why it cannot run here (skipped, saying so).
    skip: Callable[[], str | None] = lambda: None


def gunicorn(*options: str) -> Callable[[int], list[str]]:
    return lambda port: [
        str(BIN / "gunicorn"),
        WSGI,
        "-b",
        f"127.0.0.1:{port}",
        # Longer than any view of the matrix; short graceful stop at teardown.
        "--timeout",
        "120",
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
        *options,
    ]


def uwsgi(*options: str, need_app: bool = True) -> Callable[[int], list[str]]:
    return lambda port: [
        str(BIN / "uwsgi"),
        "--http-socket",
        f"127.0.0.1:{port}",
        "--module",
        WSGI,
        "--master",
        "--processes",
        "2",
        "--die-on-term",
        *(["--need-app"] if need_app else []),
        *options,
    ]


def uvicorn(port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"),
        ASGI,
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def daphne(port: int) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI]


def granian(port: int) -> list[str]:
    return [
        str(BIN / "granian"),
        ASGI,
        "--interface",
        "asgi",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        # Without it Granian stops altogether when a worker dies unexpectedly.
        "--respawn-failed-workers",
    ]


def hypercorn(port: int) -> list[str]:
    return [str(BIN / "hypercorn"), ASGI, "--workers", "2", "--bind", f"127.0.0.1:{port}"]


ASGI_PATHS = ("/deploy/", "/deploy-async/")

CONFIGS = [
    Config("gunicorn-sync", gunicorn("-w", "2")),
    Config("gunicorn-gthread", gunicorn("-k", "gthread", "--threads", "8", "-w", "2")),
    Config("gunicorn-gevent", gunicorn("-k", "gevent", "-w", "2")),
    Config(
        "gunicorn-eventlet",
        gunicorn("-k", "eventlet", "-w", "2"),
        skip=lambda: gunicorn_lacks("eventlet"),
    ),
    Config("gunicorn-preload", gunicorn("--preload", "-w", "2")),
    Config("uwsgi-prefork", uwsgi("--enable-threads")),
    Config("uwsgi-threads", uwsgi("--threads", "8")),
    Config("uwsgi-lazy-apps", uwsgi("--lazy-apps", "--enable-threads")),
    Config("uvicorn", uvicorn, ASGI_PATHS),
    Config("daphne", daphne, ASGI_PATHS, dies_with_a_worker=True),
    Config("granian", granian, ASGI_PATHS),
    Config("hypercorn", hypercorn, ASGI_PATHS, dies_with_a_worker=True),
]

#: uWSGI without enable-threads or threads: the app must refuse to load. Without
#: ``--need-app`` uWSGI stays up with no app and answers every request with a 500.
UWSGI_NO_THREADS = Config("uwsgi-no-threads", uwsgi(need_app=False))
#: The same with ``--need-app``: uWSGI gives up at once.
UWSGI_NO_THREADS_NEED_APP = Config("uwsgi-no-threads-need-app", uwsgi())


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def replayed(self) -> bool:
        return self.headers.get("idempotent-replayed") == "true"


def post(port: int, path: str, key: str, sleep: float = 0, timeout: float = 30) -> Reply:
    """POST the same JSON body to ``path`` with ``Idempotency-Key: key``; ``sleep``: how long
    the view sleeps (a header, outside the request's fingerprint)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    if sleep:
        headers["X-Deploy-Sleep"] = str(sleep)
    try:
        conn.request("POST", path, body=b'{"amount": 1999}', headers=headers)
        response = conn.getresponse()
        return Reply(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def answers(port: int, path: str = "/deploy/") -> int | None:
    """The status of a GET, ``None`` when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def starts(client: Any, key: str) -> list[dict[str, Any]]:
    """Every execution of the deployment views for ``key``: ``{"pid", "at"}``, in order."""
    from .views import DEPLOY_STARTS

    return [json.loads(raw) for raw in client.lrange(DEPLOY_STARTS.format(key=key), 0, -1)]


def finished(client: Any, key: str) -> int:
    """How many executions for ``key`` have finished their sleep."""
    from .views import DEPLOY_DONE

    return int(client.llen(DEPLOY_DONE.format(key=key)))


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie not yet reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # reaped before or while it was read
        return True


@dataclass
class Server:
    """One configuration running: :meth:`start`, :meth:`restart`, :meth:`stop`."""

    config: Config
    env: dict[str, str]
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, ready: Callable[[Server], bool] | None = None, timeout: float = 60) -> None:
        """Start it on a free port; return once ``ready`` (by default: GET /deploy/ is a 200)."""
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.config.argv(self.port),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: see stop()
            )
        self.started.append(self.proc)
        check = ready or (lambda server: answers(server.port) == 200)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None  # before the check, which may expect it
            if check(self):
                return
            assert not exited, (
                f"{self.config.name} exited with {self.proc.returncode}\n{self.log()}"
            )
            assert time.monotonic() < deadline, f"{self.config.name} did not start\n{self.log()}"
            time.sleep(0.1)

    def restart(self) -> None:
        """Start it again (on the same Redis, on a new port) after it died."""
        assert self.proc is not None
        self.proc.wait(30)
        self._end(self.proc)
        self.start()

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Stop everything it ever started, its workers included."""
        for proc in self.started:
            self._end(proc)

    @staticmethod
    def _end(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            stop(proc, 10)
        # Anything left in its process group (workers of a master that died first).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """Everything it wrote (both streams)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self, tail: int = 4000) -> str:
        """The end of its output, for failure messages."""
        return f"--- {self.config.name} log (tail) ---\n{self.output()[-tail:]}"
