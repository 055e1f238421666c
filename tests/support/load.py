"""Many requests in flight at once from one process: a small asyncio HTTP/1.1 client.

Thousands of concurrent connections cost a thread each with ``http.client``; here each is
a coroutine. Every request sends ``Connection: close`` and reads to the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One response: status, headers (lower-cased names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


async def post(port: int, path: str, key: str, body: bytes = b"{}", timeout: float = 60) -> Reply:
    """POST ``body`` to ``path`` with ``Idempotency-Key: key``."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        payload = _unchunk(payload)
    return Reply(int(lines[0].split()[1]), headers, payload)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def burst(port: int, requests: Iterable[tuple[str, str]], timeout: float = 120) -> list[Reply]:
    """Send every ``(path, key)`` at once; return the replies in the same order."""

    async def main() -> list[Reply]:
        return await asyncio.gather(*(post(port, path, key) for path, key in requests))

    return asyncio.run(asyncio.wait_for(main(), timeout))


@dataclass
class Sampler:
    """Samples a number (connections, threads) from a thread while a burst runs."""

    probe: Any
    every: float = 0.02
    samples: list[int] = field(default_factory=list)

    def __enter__(self) -> Sampler:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(int(self.probe()))
            time.sleep(self.every)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


def threads_of(pid: int) -> int:
    """The number of threads of process ``pid`` (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads line")
