"""A five-second soak (``tests/soak.py``) as part of the suite; ``make soak`` runs longer."""

from __future__ import annotations

import pytest

from .support.soak import MIX, Reply, check, soak

# The soak starts its own Redis and gunicorn; it needs no fixture server.
pytestmark = [pytest.mark.slow, pytest.mark.no_redis]


def test_five_second_soak_runs_every_accepted_key_once_and_replays_identically():
    report = soak(5.0)
    print("\n" + report.figures())
    assert report.problems == []
    assert report.executions == len(report.accepted) > 50
    assert all(report.by_kind[kind] > 10 for kind in MIX), report.by_kind
    assert not any(status >= 500 for status in report.by_status)


@pytest.mark.parametrize(
    "replies, per_key, problem",
    [
        ([Reply("new", "k", 201, b"1", False, 0)], {"k": 2}, "ran 2 times"),
        ([Reply("new", "k", 503, b"", False, 0)], {}, "5xx"),
        (
            [Reply("new", "k", 201, b"1", False, 0), Reply("retry", "k", 201, b"2", True, 0)],
            {"k": 1},
            "differs from its original",
        ),
        (
            [Reply("new", "k", 201, b"1", False, 0), Reply("retry", "k", 201, b"2", False, 0)],
            {"k": 1},
            "2 non-replayed",
        ),
        ([Reply("new", "k", 201, b"1", False, 0)], {}, "accepted without running"),
        ([Reply("mismatch", "k", 201, b"1", True, 0)], {}, "not 422"),
    ],
)
def test_the_soak_checks_catch_what_they_claim_to(replies, per_key, problem):
    assert any(problem in line for line in check(replies, per_key))
