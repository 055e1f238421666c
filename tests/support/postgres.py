"""A private, throwaway PostgreSQL server for the suite (durable mode runs on it).

:class:`PostgresServer` runs ``initdb`` on a temporary directory and starts ``postgres`` in
the foreground on a free port of 127.0.0.1, with trust authentication and its unix socket in
that directory; :meth:`PostgresServer.stop` shuts it down fast and deletes the directory.
The server binaries come from :func:`find_postgres_bin` (``$IDEMPOTENCY_POSTGRES_BIN``,
``PATH``, then Debian's ``/usr/lib/postgresql/<version>/bin``); ``scripts/ensure-postgresql``
installs them where it can. PostgreSQL refuses to run as root, so as root the cluster belongs
to, and the server runs as, an unprivileged account (:data:`RUN_AS_CANDIDATES`).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .servers import free_port

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "BIN_ENV",
    "RUN_AS_CANDIDATES",
    "PostgresBinaries",
    "PostgresServer",
    "PostgresUnavailable",
    "find_postgres_bin",
    "unavailable_reason",
]

#: The accounts a root process runs the server as, the first that exists: Debian's
#: package creates ``postgres``, and every system has ``nobody``.
RUN_AS_CANDIDATES = ("postgres", "nobody")

# Debian installs each major version side by side here, none of them on PATH.
_DEBIAN_ROOT = Path("/usr/lib/postgresql")

# A start on an auto-picked port is retried when another process takes the port between
# free_port() probing it and postgres binding it.
_PORT_ATTEMPTS = 5
_BIND_FAILURE = re.compile(r"could not bind .*address .*in use|could not create any TCP", re.I)

# Seconds to wait for the server to accept connections, and for a fast shutdown.
_START_TIMEOUT = 60.0
_STOP_GRACE = 30.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the server could not be started."""


class PostgresBinaries:
    """Where ``initdb`` and ``postgres`` of one PostgreSQL installation are."""

    def __init__(self, initdb: str, postgres: str) -> None:
        self.initdb = initdb
        self.postgres = postgres

    def __repr__(self) -> str:
        return f"PostgresBinaries(initdb={self.initdb!r}, postgres={self.postgres!r})"


def _version_key(directory: Path) -> tuple[int, ...]:
    # "15" or "9.6": numeric, so 10 sorts above 9.6; non-numeric names sort last.
    parts = re.findall(r"\d+", directory.parent.name)
    return tuple(int(part) for part in parts) or (-1,)


#: Environment variable naming the directory of the ``initdb`` and ``postgres`` to use.
BIN_ENV = "IDEMPOTENCY_POSTGRES_BIN"


def _binaries_in(directory: Path) -> PostgresBinaries | None:
    initdb, postgres = directory / "initdb", directory / "postgres"
    if all(path.is_file() and os.access(path, os.X_OK) for path in (initdb, postgres)):
        return PostgresBinaries(str(initdb), str(postgres))
    return None


def find_postgres_bin() -> PostgresBinaries:
    """The PostgreSQL server binaries to use.

    ``$IDEMPOTENCY_POSTGRES_BIN`` (a directory) wins when set, so a run can pick a version;
    then ``initdb`` and ``postgres`` on ``PATH``; then the newest of Debian's
    ``/usr/lib/postgresql/<version>/bin``.

    Raises:
        PostgresUnavailable: no installation has both ``initdb`` and ``postgres``.
    """
    chosen = os.environ.get(BIN_ENV)
    if chosen:
        found = _binaries_in(Path(chosen))
        if found is None:
            raise PostgresUnavailable(
                f"${BIN_ENV} names no directory with initdb and postgres: {chosen!r}"
            )
        return found
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb and postgres:
        return PostgresBinaries(initdb, postgres)
    for directory in sorted(_DEBIAN_ROOT.glob("*/bin"), key=_version_key, reverse=True):
        found = _binaries_in(directory)
        if found is not None:
            return found
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries (initdb and postgres) on PATH or in {_DEBIAN_ROOT}/*/bin"
        " (scripts/ensure-postgresql installs Debian's package where it can)"
    )


def _run_as_account() -> pwd.struct_passwd | None:
    """The account to run initdb and postgres as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in RUN_AS_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable(
        f"running as root, and none of the accounts {RUN_AS_CANDIDATES} exists to run"
        " PostgreSQL as (it refuses to run as root)"
    )


def unavailable_reason() -> str | None:
    """Why no :class:`PostgresServer` can run here, in one line; ``None`` if one can.

    Says nothing about whether a start would succeed: only that what it needs is present
    (the server binaries, an account to run them as, psycopg to talk to the server).
    """
    try:
        find_postgres_bin()
        _run_as_account()
    except PostgresUnavailable as error:
        return str(error)
    try:
        import psycopg  # noqa: F401
    except ImportError as error:
        return f"psycopg is not installed ({error}): pip install -e '.[dev]'"
    return None


class _Resources:
    """What a started server holds, released by :meth:`release` (a second call does nothing).

    Held by a weakref finalizer (which also runs at interpreter exit), so a server nobody
    stopped still does not outlive the test run; it holds no reference to the server.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_status: int | None = None
        self.directory: Path | None = None
        self.owner_pid = os.getpid()

    def shut_down(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is not None:
            self.exit_status = process.returncode
            return
        # SIGINT is postgres's fast shutdown: it disconnects clients and exits. SIGTERM
        # (what servers.stop() sends) is the smart one, which waits for every client to
        # leave, so one connection left open would hang the teardown.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            # Its backends (each in a session of its own) notice the postmaster's death and
            # exit by themselves.
            process.kill()
            process.wait()
        self.exit_status = process.returncode

    def release(self) -> None:
        # A forked child (a test's worker process) inherits the finalizer; only the process
        # that started the server may stop it.
        if os.getpid() != self.owner_pid:
            return
        self.shut_down()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


class PostgresServer:
    """A throwaway PostgreSQL cluster and its running server; use as a context manager.

    ``host``, ``port``, ``user`` and ``dbname`` say where to connect (trust authentication:
    no password); ``user`` is the cluster's superuser. :meth:`django_database` gives a
    ``DATABASES`` entry, :meth:`environ` the variables ``tests.support.pg_settings`` reads.
    """

    host = "127.0.0.1"

    def __init__(self, dbname: str = "idempotency", user: str | None = None) -> None:
        self.dbname = dbname
        # The role is named after whoever runs the tests, so psql/libpq on this machine
        # connect without -U.
        self.user = user or getpass.getuser()
        self.port = 0
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, self._resources.release)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """``initdb`` a cluster in a new temporary directory, start it, create ``dbname``.

        Raises:
            PostgresUnavailable: no binaries, or initdb or the server failed (with its log).
        """
        if self._resources.process is not None:
            raise PostgresUnavailable("this PostgresServer is already running")
        binaries = find_postgres_bin()
        account = _run_as_account()
        directory = Path(tempfile.mkdtemp(prefix="idempotency-pg-"))
        self._resources.directory = directory
        try:
            if account is not None:
                # The server's account needs the directory (its data and its socket live
                # there); root can still delete it afterwards.
                os.chown(directory, account.pw_uid, account.pw_gid)
            self._initdb(binaries, account)
            self._launch(binaries, account)
            self.create_database(self.dbname)
        except BaseException:
            self._resources.release()
            raise
        return self

    def stop(self) -> None:
        """Shut the server down (fast: clients are disconnected) and delete its directory."""
        self._resources.release()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it is ------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The temporary directory: ``data/`` (the cluster), the socket, ``postgres.log``."""
        if self._resources.directory is None:
            raise PostgresUnavailable("the server is not running")
        return self._resources.directory

    @property
    def pid(self) -> int | None:
        """The server's (the postmaster's) process id; ``None`` when it is not running."""
        process = self._resources.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.pid is not None

    @property
    def exit_status(self) -> int | None:
        """How the last stopped server exited (0: a clean fast shutdown); ``None`` before."""
        return self._resources.exit_status

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's unix socket (libpq's ``host`` for a socket)."""
        return self.directory

    @property
    def log_path(self) -> Path:
        """The server's log (stdout and stderr)."""
        return self.directory / "postgres.log"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log (for failure messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def conninfo(self, dbname: str | None = None) -> str:
        """A libpq connection string for ``dbname`` (default: the server's database)."""
        name = dbname or self.dbname
        return f"host={self.host} port={self.port} user={self.user} dbname={name}"

    def connect(self, dbname: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection to ``dbname`` (default: the server's database)."""
        import psycopg  # a dev dependency: not needed by suites that never start this

        return psycopg.connect(self.conninfo(dbname), **kwargs)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (a SQL identifier); return the name."""
        from psycopg import sql

        with self.connect("postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting whoever is still connected to it."""
        from psycopg import sql

        with self.connect("postgres", autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def django_database(self, name: str | None = None) -> dict[str, Any]:
        """A ``DATABASES`` entry for database ``name`` (default: the server's database).

        Django's test runner (and pytest-django) creates and drops ``test_<name>`` beside it.
        """
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name or self.dbname,
            "USER": self.user,
            "PASSWORD": "",
            "HOST": self.host,
            "PORT": str(self.port),
        }

    def environ(self, name: str | None = None) -> dict[str, str]:
        """The ``TEST_PG_*`` variables that point ``tests.support.pg_settings`` at ``name``."""
        return {
            "TEST_PG_HOST": self.host,
            "TEST_PG_PORT": str(self.port),
            "TEST_PG_USER": self.user,
            "TEST_PG_NAME": name or self.dbname,
        }

    def __repr__(self) -> str:
        state = f"port {self.port}" if self._resources.process is not None else "stopped"
        return f"<PostgresServer {self.user}@{self.host} {self.dbname!r} {state}>"

    # -- internals --------------------------------------------------------------------------

    def _run(
        self, cmd: list[str], account: pwd.struct_passwd | None, **kwargs: Any
    ) -> dict[str, Any]:
        """Popen keyword arguments that run ``cmd`` as ``account`` (``None``: as ourselves)."""
        env = dict(os.environ, LC_ALL="C")
        # libpq variables of the caller's shell must not redirect or configure the server.
        for key in [key for key in env if key.startswith("PG")]:
            del env[key]
        options: dict[str, Any] = {"env": env, "cwd": self.directory, **kwargs}
        if account is not None:
            env["HOME"] = str(self.directory)
            options.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        return options

    def _initdb(self, binaries: PostgresBinaries, account: pwd.struct_passwd | None) -> None:
        cmd = [
            binaries.initdb,
            "--pgdata",
            str(self.directory / "data"),
            "--username",
            self.user,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            # A throwaway cluster: nothing is worth waiting for the disk.
            "--no-sync",
        ]
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **self._run(cmd, account)
        )
        if done.returncode != 0:
            output = done.stdout.decode(errors="replace").strip()
            raise PostgresUnavailable(f"initdb exited with {done.returncode}: {output}")

    def _launch(self, binaries: PostgresBinaries, account: pwd.struct_passwd | None) -> None:
        for attempt in range(_PORT_ATTEMPTS):
            port = free_port()
            cmd = [
                binaries.postgres,
                "-D",
                str(self.directory / "data"),
                "-p",
                str(port),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"unix_socket_directories={self.directory}",
                # Durability is not under test here (no crash recovery is), and fsyncs on a
                # loaded CI disk cost seconds per migrate.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                # Concurrency tests open a connection per thread and process.
                "-c",
                "max_connections=200",
            ]
            with self.log_path.open("ab") as log:
                process = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own process group: a ^C at the terminal reaches pytest, whose
                    # teardown then stops the server, rather than killing it under a test.
                    start_new_session=True,
                    **self._run(cmd, account),
                )
            self._resources.process = process
            self.port = port
            if self._wait_until_ready(process):
                return
            self._resources.process = None
            if not _BIND_FAILURE.search(self.log_tail()) or attempt == _PORT_ATTEMPTS - 1:
                raise PostgresUnavailable(
                    f"postgres exited with {process.returncode}:\n{self.log_tail()}"
                )

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> bool:
        """Whether the server accepts connections (False: it exited, e.g. port taken)."""
        import psycopg

        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if process.poll() is not None:
                return False
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(
                        f"postgres did not accept connections within {_START_TIMEOUT:.0f}s"
                        f" ({error}):\n{self.log_tail()}"
                    ) from error
                time.sleep(0.05)
