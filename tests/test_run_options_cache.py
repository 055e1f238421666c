"""run()'s validated options are cached per call signature, and the cache never lets a bad
value through: ``True == 1`` and ``Decimal(5) == 5``, yet only one of each pair is valid."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from django_idempotency import InvalidOption, run

MEMORY = "django_idempotency.stores.memory.open_store"


@pytest.fixture
def memory(settings: Any) -> Any:
    """The in-memory store: these tests are about validating options, not about Redis."""
    settings.IDEMPOTENCY = {"STORE": MEMORY}
    return settings


def key() -> str:
    return f"cache-{uuid.uuid4().hex}"


@pytest.mark.no_redis
@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ({"ttl": 1}, {"ttl": True}),
        ({"ttl": 5}, {"ttl": Decimal(5)}),
        ({"lock_ttl": 5, "wait_timeout": 1}, {"lock_ttl": 5, "wait_timeout": True}),
    ],
)
def test_a_value_equal_to_a_cached_valid_one_is_still_validated(memory, good, bad):
    assert run(key(), lambda: "ran", **good) == "ran"
    assert run(key(), lambda: "ran", **good) == "ran"  # validated once, then cached
    (name,) = [n for n in bad if bad[n] is not good[n]]
    with pytest.raises(InvalidOption, match=rf"run\({name}=\.\.\.\) must be"):
        run(key(), lambda: "ran", **bad)
