"""Load generators: ``wrk`` when it is installed, else a Python one; and the storm client.

Every generator opens a new connection per request when the server closes it
(gunicorn's sync worker always does), keeps ``connections`` requests in flight and
reports requests/s with p50/p99 latency.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

#: How a phase sends the Idempotency-Key header.
FRESH = "fresh"  # a new key on every request: the first-time path
SAME = "same"  # one key for every request: the replay path (after the first)
NONE = "none"  # no header


@dataclass(frozen=True)
class Load:
    """What one timed phase measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    generator: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def request_bytes(path: str, body: bytes, key: str | None) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if key is not None:
        head.append(f"Idempotency-Key: {key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def generator_name(choice: str) -> str:
    """``wrk`` or ``python``, from ``auto``/``wrk``/``python``."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install wrk)")
    return choice


def drive(
    generator: str,
    port: int,
    path: str,
    body: bytes,
    keys: str,
    seconds: float,
    connections: int,
) -> Load:
    """Run one phase of ``seconds`` against ``127.0.0.1:port``."""
    prefix = uuid.uuid4().hex[:12]
    if generator == "wrk":
        return _wrk(port, path, body, keys, prefix, seconds, connections)
    return _python(port, path, body, keys, prefix, seconds, connections)


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
%(static)s
local counter = 0
local fresh = %(fresh)s
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end
if fresh then
  request = function()
    counter = counter + 1
    wrk.headers["Idempotency-Key"] = "%(prefix)s-" .. tid .. "-" .. counter
    return wrk.format()
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH-RESULT %%d %%d %%.1f %%.1f %%d %%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b:03d}" for b in data) + '"'


def _wrk(
    port: int, path: str, body: bytes, keys: str, prefix: str, seconds: float, connections: int
) -> Load:
    static = ""
    if keys == SAME:
        static = f'wrk.headers["Idempotency-Key"] = "{prefix}-same"'
    script = _WRK_SCRIPT % {
        "body": _lua_string(body),
        "static": static,
        "fresh": "true" if keys == FRESH else "false",
        "prefix": prefix,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(round(seconds), 1)}s",
                "--timeout",
                "10s",
                "-s",
                f.name,
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    line = next(x for x in out.splitlines() if x.startswith("BENCH-RESULT"))
    n, micros, p50, p99, status_errors, io_errors = line.split()[1:]
    return Load(
        requests=int(n),
        seconds=int(micros) / 1e6,
        p50_ms=float(p50) / 1000,
        p99_ms=float(p99) / 1000,
        errors=int(status_errors) + int(io_errors),
        generator="wrk",
    )


def exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send one request on a new connection and read the response until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _python(
    port: int, path: str, body: bytes, keys: str, prefix: str, seconds: float, connections: int
) -> Load:
    same = request_bytes(path, body, None if keys == NONE else f"{prefix}-same")
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start = time.perf_counter()
    end = start + seconds

    def client(n: int) -> None:
        mine, count = latencies[n], 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            count += 1
            data = same if keys != FRESH else request_bytes(path, body, f"{prefix}-{n}-{count}")
            try:
                reply = exchange(port, data)
                if not reply.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
                    errors[n] += 1
            except OSError:
                errors[n] += 1
            mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    merged = sorted(x for xs in latencies for x in xs)
    return Load(
        requests=len(merged),
        seconds=elapsed,
        p50_ms=percentile(merged, 50) * 1000,
        p99_ms=percentile(merged, 99) * 1000,
        errors=sum(errors),
        generator="python",
    )


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(round(pct / 100 * len(sorted_values) + 0.5) - 1, 0)
    return sorted_values[min(rank, len(sorted_values) - 1)]


@dataclass(frozen=True)
class Reply:
    """One storm response: when it arrived (wall clock), its status, headers and body."""

    received: float
    status: int
    headers: dict[str, str]
    body: bytes = b""


def storm(port: int, path: str, body: bytes, key: str, n: int) -> list[Reply]:
    """``n`` concurrent duplicates of one key: connect all, send all at once, read all.

    One thread and ``selectors``, so an arrival time is taken within microseconds of
    the kernel handing over the last byte, whatever the other connections do.
    """
    data = request_bytes(path, body, key)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    for s in socks:
        s.sendall(data)
    sel = selectors.DefaultSelector()
    buffers: dict[socket.socket, list[bytes]] = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        buffers[s] = []
    replies: list[Reply] = []
    deadline = time.monotonic() + 90
    while buffers and time.monotonic() < deadline:
        for event, _ in sel.select(timeout=1):
            s = event.fileobj  # type: ignore[assignment]
            try:
                chunk = s.recv(65536)
            except OSError:  # reset by the server: an answer of its own (status 0)
                chunk = b""
            if chunk:
                buffers[s].append(chunk)
                continue
            received = time.time()
            sel.unregister(s)
            s.close()
            replies.append(_parse(received, b"".join(buffers.pop(s))))
    for s in buffers:  # never answered: status 0 as well
        s.close()
        replies.append(Reply(time.time(), 0, {}, b""))
    return replies


def _parse(received: float, raw: bytes) -> Reply:
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    head = head_bytes.decode("latin-1").split("\r\n")
    status = int(head[0].split()[1]) if head and len(head[0].split()) > 1 else 0
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(received, status, headers, body)
