"""The policies a user chooses: which HTTP responses are stored, and what a retry gets
after the owner died without finishing.

Their values are validated by :mod:`.options` (settings and door options alike) and
applied by the HTTP lifecycle (what is stored) and the engine (outcome unknown).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from django.http import HttpResponseBase

#: Decides whether a response is stored and replayed (true) or its key released.
StorePolicy = Callable[[HttpResponseBase], bool]

_RANGE = re.compile(r"([2-5])xx(?:-([2-5])xx)?")


@dataclass(frozen=True, slots=True)
class StatusRange:
    """Stores responses whose status is in ``low``-``high`` (``"2xx-4xx"``: 200-499)."""

    low: int
    high: int

    def __call__(self, response: HttpResponseBase) -> bool:
        return self.low <= response.status_code <= self.high

    def __str__(self) -> str:
        first, last = self.low // 100, self.high // 100
        return f"{first}xx" if first == last else f"{first}xx-{last}xx"


@dataclass(frozen=True, slots=True)
class StatusSet:
    """Stores responses whose status is one of ``statuses``."""

    statuses: frozenset[int]

    def __call__(self, response: HttpResponseBase) -> bool:
        return response.status_code in self.statuses

    def __str__(self) -> str:
        return ", ".join(str(s) for s in sorted(self.statuses))


#: Today's default: 2xx, 3xx and 4xx stored, 5xx released (as the IETF draft and most
#: servers do for client errors).
STORE_2XX_4XX = StatusRange(200, 499)
#: ``STORE_SERVER_ERRORS = True``: every response is stored.
STORE_2XX_5XX = StatusRange(200, 599)


def status_range(text: str) -> StatusRange | None:
    """The range written as ``"2xx"`` or ``"2xx-4xx"``; ``None`` if ``text`` is not one."""
    match = _RANGE.fullmatch(text)
    if match is None:
        return None
    first = int(match.group(1))
    last = int(match.group(2) or first)
    return StatusRange(first * 100, last * 100 + 99) if first <= last else None


class OutcomeUnknownPolicy(str, Enum):
    """What a retry gets when the owner of its key died (its lease ran out) unfinished."""

    def __str__(self) -> str:
        return self.value

    #: Run the action again: at-least-once after a crash.
    RERUN = "rerun"
    #: Refuse every retry (409 ``outcome-unknown``) until an operator resolves the record
    #: or it expires: at-most-once.
    REFUSE = "refuse"
