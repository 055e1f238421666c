"""Display text shared by ``idempotency_inspect`` and the admin pages."""

from __future__ import annotations

import re
from datetime import datetime, timezone

#: Why a running record is only purged when the operator insists.
RUNNING_WHY = (
    "deleting a running record lets a retry run the action a second time "
    "while the first run may still be in progress"
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h``, ``2d`` or ``1w``; ``ValueError`` else."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h, 2d, 1w)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def human_duration(ms: int | None) -> str:
    """``850ms``, ``42s``, ``3m12s``, ``5h03m``, ``2d04h``; ``none`` for ``None``."""
    if ms is None:
        return "none"
    if ms < 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 in UTC (``2026-01-31T12:00:00.123+00:00``)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def human_bytes(n: int | float | None) -> str:
    """``812 B``, ``1.2 KiB``, ``3.4 MiB``..."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def printable(text: str) -> str:
    """``text`` safe for a terminal: ``run()`` keys may hold control characters."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def store_down(exc: Exception) -> str:
    """What the command and the admin say when the store fails: one line, never empty."""
    return "Redis is unreachable or failed: " + (" ".join(str(exc).split()) or type(exc).__name__)
