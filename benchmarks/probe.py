"""Counting Redis work: ``INFO commandstats`` deltas and an exact MONITOR audit.

``INFO commandstats`` counts a Lua script call (EVALSHA) once *and* every command the
script runs inside it, with no way to tell them apart. Round trips, which is what a
request pays for, are counted exactly by MONITOR, which tags script-inner commands
with ``[n lua]``; it slows Redis down, so it only runs in short audit windows.
"""

from __future__ import annotations

import re
import socket
import threading
import uuid
from collections import Counter
from typing import Any

#: Commands the harness itself sends; never part of a measured request.
HARNESS = frozenset({"info", "config", "echo", "monitor", "memory", "scan", "type", "flushall"})


def reset(client: Any) -> None:
    """Zero the server's command statistics (CONFIG RESETSTAT)."""
    client.config_resetstat()


def commandstats(client: Any) -> Counter[str]:
    """Calls per command since the last reset, harness commands left out."""
    stats: Counter[str] = Counter()
    for name, value in client.info("commandstats").items():
        command = name.removeprefix("cmdstat_").lower()
        if command not in HARNESS:
            stats[command] = int(value["calls"])
    return stats


_LINE = re.compile(r'^\+?[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')


class Monitor:
    """Record every command Redis executes while the ``with`` block runs.

    ``top`` counts the commands clients sent (round trips, a pipeline counted per
    command), ``inner`` the ones Lua scripts ran inside them, and ``by_origin`` the
    commands sent per client address (``ip:port``; see :class:`ClientList` to tell which
    process holds that connection).
    """

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.top: Counter[str] = Counter()
        self.inner: Counter[str] = Counter()
        self.by_origin: dict[str, Counter[str]] = {}
        self._marker = f"bench-monitor-end-{uuid.uuid4().hex}"
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._control: socket.socket | None = None

    def __enter__(self) -> Monitor:
        self._control = socket.create_connection(self.address)
        self._sock = socket.create_connection(self.address)
        self._sock.sendall(b"MONITOR\r\n")
        reader = self._sock.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        self._thread = threading.Thread(target=self._read, args=(reader,), daemon=True)
        self._thread.start()
        return self

    def _read(self, reader: Any) -> None:
        assert self._control is not None
        host, port = self._control.getsockname()[:2]
        control = f"{host}:{port}"
        for raw in reader:
            line = raw.decode("utf-8", "replace")
            if self._marker in line:
                return
            match = _LINE.match(line)
            if match is None:
                continue
            origin, command = match.group(1), match.group(2).lower()
            if origin == control:
                continue
            if origin == "lua":
                self.inner[command] += 1
            else:
                self.top[command] += 1
                self.by_origin.setdefault(origin, Counter())[command] += 1

    def __exit__(self, *exc_info: object) -> None:
        assert self._control is not None and self._sock is not None and self._thread
        self._control.sendall(f"ECHO {self._marker}\r\n".encode())
        self._thread.join(10)
        self._control.close()
        self._sock.close()


class ClientList:
    """Samples ``CLIENT LIST`` from a thread while the ``with`` block runs.

    Connections are told apart by name: the benchmark's servers and subprocesses name
    every connection ``bench-<pid>`` (see ``benchmarks.settings``). ``peak[name]`` is the
    most connections one name held at once; ``names[addr]`` maps every address seen to
    its name, so MONITOR's per-address counts can be summed per process.
    """

    def __init__(self, client: Any, every: float = 0.01) -> None:
        self.client = client
        self.every = every
        self.peak: Counter[str] = Counter()
        self.names: dict[str, str] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        now: Counter[str] = Counter()
        for entry in self.client.client_list():
            name = entry.get("name") or ""
            self.names[entry["addr"]] = name
            if name.startswith("bench-"):
                now[name] += 1
        for name, n in now.items():
            self.peak[name] = max(self.peak[name], n)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __enter__(self) -> ClientList:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)
        self.sample()

    def per_process(self, monitor: Monitor) -> dict[str, Counter[str]]:
        """MONITOR's commands summed per ``bench-<pid>`` connection name."""
        out: dict[str, Counter[str]] = {}
        for origin, commands in monitor.by_origin.items():
            name = self.names.get(origin, "")
            if name.startswith("bench-"):
                out.setdefault(name, Counter()).update(commands)
        return out

    def unattributed(self, monitor: Monitor) -> Counter[str]:
        """Commands from connections never seen in a sample (opened and closed between)."""
        out: Counter[str] = Counter()
        for origin, commands in monitor.by_origin.items():
            if origin not in self.names:
                out.update(commands)
        return out


def per(counter: Counter[str], n: int) -> str:
    """``evalsha 2.00 · get 2.00`` style breakdown per request, most frequent first."""
    if not n:
        return "-"
    return " · ".join(f"{name} {count / n:.2f}" for name, count in counter.most_common())
