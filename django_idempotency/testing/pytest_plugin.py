"""pytest plugin: every test of a project using django-idempotency gets an empty store.

Loaded by the package's ``pytest11`` entry point, so installing django-idempotency is
the whole setup. Each test runs inside
:func:`~django_idempotency.testing.isolation.isolated_store`: its records live under a
key prefix of its own on the store the settings name, deleted after the test.

It acts only where Django is set up (pytest-django does that) and
``"django_idempotency"`` is in ``INSTALLED_APPS``; anywhere else (another project in the
same virtualenv, a project without Django) it does nothing and imports nothing more.
``-p no:django_idempotency`` switches it off for a run.
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
