"""A TCP proxy on loopback that the client's tests put between a client and a server: it
records every connection (each attempt, as gunicorn's sync workers close a connection
after one answer) and can lose an answer on purpose.

With ``drop=N`` the first N connections have their request forwarded and the server's
whole answer read, then the client's side is closed without a byte of it: the request
ran, the client never learns how (a crash or a network cut at the worst moment).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class Connection:
    """One client connection as the proxy saw it."""

    #: ``time.monotonic()`` when the client connected.
    arrived: float
    request: bytearray = field(default_factory=bytearray)
    response: bytearray = field(default_factory=bytearray)
    #: When the first byte of the server's answer reached the proxy (before the client
    #: could have it); ``None`` while there is none.
    replied: float | None = None
    #: When the client closed its side, if it did before the server finished.
    client_left: float | None = None
    #: The server's answer was read whole (it closed the connection).
    finished: bool = False
    #: The answer was kept from the client.
    dropped: bool = False

    def header(self, name: str, *, response: bool = False) -> str | None:
        """A header of the request (or the response) as it crossed the wire."""
        head = bytes(self.response if response else self.request).split(b"\r\n\r\n", 1)[0]
        for line in head.decode("latin-1").split("\r\n")[1:]:
            field_name, _, value = line.partition(":")
            if field_name.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def status(self) -> int | None:
        """The response's status code, if one came."""
        if not self.response:
            return None
        return int(bytes(self.response).split(b" ", 2)[1])

    @property
    def body(self) -> bytes:
        """The response's body (the test servers close the connection after it)."""
        return bytes(self.response).split(b"\r\n\r\n", 1)[1]


def _received(sock: socket.socket) -> Iterator[bytes]:
    """What ``sock`` receives, chunk by chunk, until its peer closes it (or it fails)."""
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        yield data


class Proxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream``; use it as a context manager."""

    def __init__(self, upstream: int, drop: int = 0) -> None:
        self.upstream = upstream
        self.drop = drop
        self.connections: list[Connection] = []
        self._changed = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._closing = False

    def wait_for(self, check: Callable[[list[Connection]], bool], timeout: float = 60) -> None:
        """Block until ``check(connections)`` holds (re-checked at each change)."""
        with self._changed:
            if not self._changed.wait_for(lambda: check(self.connections), timeout):
                raise AssertionError(f"the proxy never saw {check} within {timeout} s")

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._changed:
                connection = Connection(time.monotonic())
                connection.dropped = len(self.connections) < self.drop
                self.connections.append(connection)
                self._changed.notify_all()
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._spawn(self._requests, client, server, connection)
            self._spawn(self._responses, client, server, connection)

    def _requests(self, client: socket.socket, server: socket.socket, c: Connection) -> None:
        """Client to server, until the client closes its side."""
        for data in _received(client):
            with self._changed:
                c.request += data
            try:
                server.sendall(data)
            except OSError:
                break
        with self._changed:
            if not c.finished:
                c.client_left = time.monotonic()
            self._changed.notify_all()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _responses(self, client: socket.socket, server: socket.socket, c: Connection) -> None:
        """Server to client (unless dropped), until the server closes the connection."""
        for data in _received(server):
            with self._changed:
                if c.replied is None:
                    c.replied = time.monotonic()
                c.response += data
                self._changed.notify_all()
            if not c.dropped:
                # The client may have left: keep reading what the server answers.
                with contextlib.suppress(OSError):
                    client.sendall(data)
        with self._changed:
            c.finished = True
            self._changed.notify_all()
        server.close()
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)  # wakes the other thread's recv()
        client.close()

    def __enter__(self) -> Proxy:
        self._spawn(self._accept)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() would not)
        self._listener.close()
        for thread in self._threads:
            thread.join(30)
