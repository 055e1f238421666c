"""A loopback HTTP server that answers from a script, for the client's tests that need no
Django: each request gets the script's next answer and is recorded as it arrived.

An answer is ``(status, headers)``, or ``DROP``: the request is read whole, then the
connection is closed without a byte of answer (as a server that crashed mid-request);
or ``HANG``: no answer until the server is shut down.
Once the script is spent, every request gets 201.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DROP = "drop"
HANG = "hang"

Scripted = tuple[int, dict[str, str]] | str


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    headers: dict[str, str]
    body: bytes
    #: ``time.monotonic()`` when it arrived.
    at: float


class ScriptedServer:
    """Serves ``script`` on a free port of 127.0.0.1; ``seen`` lists the requests."""

    def __init__(self, script: Sequence[Scripted]) -> None:
        self.script = list(script)
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        #: Set when the server shuts down: ends every ``HANG``.
        self.released = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._chunked()
                else:
                    body = self.rfile.read(length)
                answer = owner._record(self.command, dict(self.headers.items()), body)
                if answer in (DROP, HANG):
                    if answer == HANG:
                        owner.released.wait()
                    self.close_connection = True
                    return
                assert not isinstance(answer, str)
                status, headers = answer
                payload = json.dumps({"status": status, "n": len(owner.seen)}).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _chunked(self) -> bytes:
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    chunk = self.rfile.read(size + 2)[:size]
                    if not size:
                        return data
                    data += chunk

            do_POST = do_PATCH = do_GET = do_PUT = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/charges/"

    def _record(self, method: str, headers: dict[str, str], body: bytes) -> Scripted:
        with self._lock:
            self.seen.append(
                Seen(method, {k.lower(): v for k, v in headers.items()}, body, time.monotonic())
            )
            return self.script.pop(0) if self.script else (201, {})


@contextmanager
def scripted(*script: Scripted) -> Iterator[ScriptedServer]:
    """A :class:`ScriptedServer` serving in a thread, shut down afterwards."""
    server = ScriptedServer(script)
    thread = threading.Thread(target=server._server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server._server.shutdown()
        server._server.server_close()
        thread.join()
