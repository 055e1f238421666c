"""Headless Chromium driven over the DevTools protocol, for tests that click.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol messages
(JSON, each ended by a NUL byte) on file descriptor 3 and writes its answers and events
on descriptor 4, so no WebSocket client is needed. The browser is stopped on exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

from .servers import stop

#: A guard against a hung browser, not a performance assertion.
GUARD = 120.0


def _above_four(fd: int) -> int:
    """``fd`` moved to a descriptor numbered 10 or more."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class ProtocolError(Exception):
    """Chromium answered a command with an error."""


class Browser:
    """One headless Chromium with one page (tab): navigate, evaluate, click."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._answers, from_browser = os.pipe()
        # bash puts the pipes on descriptors 3 and 4, where Chromium expects them; moved
        # to 10 and up first, so that neither is one of 3 and 4 already (and closed after).
        to_browser, from_browser = (_above_four(fd) for fd in (to_browser, from_browser))
        self._proc = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser} '
                f"{to_browser}<&- {from_browser}>&-",
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(to_browser, from_browser),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.command("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.command("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.page("Page.enable")

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop Chromium and close the pipes."""
        stop(self._proc, 10)
        for fd in (self._commands, self._answers):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._answers], [], [], GUARD)
            assert ready, "Chromium sent nothing for two minutes"
            chunk = os.read(self._answers, 65536)
            assert chunk, "Chromium closed its pipe"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def command(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a protocol command and return its result; events meanwhile go to ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise ProtocolError(f"{method}: {answer['error']}")
            return answer["result"]

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the page (the tab this browser opened)."""
        return self.command(method, self._session, **params)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (the test looking, not the page)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for_event(self, method: str) -> dict[str, Any]:
        """The next event ``method`` (one already received counts), removed from ``events``."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._message())

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait until it has loaded."""
        self.events.clear()
        self.page("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")

    def centre(self, selector: str) -> tuple[float, float]:
        """Where ``selector``'s centre is in the page's viewport."""
        x, y = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        return float(x), float(y)

    def click(self, at: tuple[float, float], count: int = 1) -> None:
        """Press and release the left mouse button at ``at``, as a user does.

        ``count`` is the click count the browser reports: 2 is the second click of a
        double click. The point is given, not looked up: while a form submission is
        pending the page does not answer ``Runtime.evaluate``, but it still takes clicks.
        """
        x, y = at
        for kind in ("mousePressed", "mouseReleased"):
            self.page(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=count
            )
