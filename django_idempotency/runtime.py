"""The process-wide engine, built from the settings: the composition root.

Doors and commands ask :func:`get_engine` for the engine; it is built on first use
(importing the package never needs Redis) and rebuilt when the settings change.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from django.conf import settings as django_settings

from .conf import IdempotencySettings, get_settings, on_reload
from .engine import Engine
from .lease import require_renewal
from .records import Sealer

_engine: Engine | None = None
_lock = threading.Lock()


def sealer_for(settings: IdempotencySettings) -> Sealer:
    """The record sealer: MAC keyed from ``SECRET_KEY`` (fallbacks verify), encryption keys."""
    secrets = [django_settings.SECRET_KEY, *getattr(django_settings, "SECRET_KEY_FALLBACKS", ())]
    return Sealer(
        secrets,
        encryption_keys=settings.ENCRYPTION_KEYS,
        compress_min_bytes=settings.COMPRESS_MIN_BYTES,
    )


def build_engine(settings: IdempotencySettings) -> Engine:
    """A new engine on the store the settings name (refused where leases cannot renew)."""
    require_renewal()
    return Engine(settings.STORE(settings), sealer_for(settings), max_waiters=settings.MAX_WAITERS)


#: What :func:`get_engine` builds the engine with (see :func:`engines_built_by`).
_build: Callable[[IdempotencySettings], Engine] = build_engine


def get_engine() -> Engine:
    """The engine for the current settings."""
    global _engine
    engine = _engine
    if engine is None:
        with _lock:
            if _engine is None:
                _engine = _build(get_settings())
            engine = _engine
    return engine


@contextlib.contextmanager
def engines_built_by(builder: Callable[[IdempotencySettings], Engine]) -> Iterator[None]:
    """Inside the block, the engine is built by ``builder`` from the current settings.

    The test isolation (:mod:`django_idempotency.testing.isolation`) gives each test a
    store of its own this way, and it holds through ``override_settings`` because every
    rebuild goes through ``builder``. The engine in use is dropped on entry and on exit.
    """
    previous = _drop(builder)
    try:
        yield
    finally:
        _drop(previous)


def _drop(
    builder: Callable[[IdempotencySettings], Engine] | None = None,
) -> Callable[[IdempotencySettings], Engine]:
    """Close the engine in use (the next use builds one), switching to ``builder`` if given;
    return the builder used until now."""
    global _build, _engine
    with _lock:
        previous = _build
        if builder is not None:
            _build = builder
        old, _engine = _engine, None
    if old is not None:
        old.close()
    return previous


@on_reload
def _reset() -> None:
    _drop()
