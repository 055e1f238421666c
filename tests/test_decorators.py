"""Decorator arguments are validated once, at decoration time."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_idempotency import idempotent_view

pytestmark = [pytest.mark.no_redis, pytest.mark.matrix]


def view(request):
    return None


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"ttl": -1}, ImproperlyConfigured),
        ({"methods": ["YEET"]}, ImproperlyConfigured),
        ({"conflict": "queue"}, ValueError),
        ({"required": "yes"}, TypeError),
        ({"scope": "no.such.path"}, ImproperlyConfigured),
    ],
)
def test_bad_arguments_fail_at_decoration_time(kwargs, error):
    with pytest.raises(error):
        idempotent_view(**kwargs)(view)


def test_bare_and_called_forms_both_mark_the_view():
    assert getattr(idempotent_view(view), "idempotency_door", False) is True
    assert getattr(idempotent_view(ttl=5)(view), "idempotency_door", False) is True
    assert idempotent_view(view).__name__ == "view"
