"""pytest plugin (the ``pytest11`` entry point): each test its own, empty idempotency store.

It acts only where Django is set up with ``"django_idempotency"`` installed, and imports
nothing more otherwise: every project in the virtualenv loads it, with or without Django.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


def uses_django_idempotency() -> bool:
    """Whether Django is set up in this process with ``django_idempotency`` installed."""
    if "django" not in sys.modules:
        return False
    from django.apps import apps
    from django.conf import settings

    return settings.configured and apps.ready and apps.is_installed("django_idempotency")


@pytest.fixture(autouse=True)
def _django_idempotency_isolated_store() -> Iterator[None]:
    """Each test its own, empty idempotency store (see the module's docstring)."""
    if not uses_django_idempotency():
        yield
        return
    from .isolation import isolated_store

    with isolated_store():
        yield
