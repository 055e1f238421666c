"""Response bodies the benchmarks store: incompressible bytes and typical JSON (no Django)."""

from __future__ import annotations

import json
import random
from typing import Any


def incompressible(size: int) -> bytes:
    """``size`` pseudo-random bytes: no compressor shrinks them (the same ones each time)."""
    return random.Random(size).randbytes(size)


def typical_json(target: int = 4096) -> bytes:
    """A list-of-objects JSON response of about ``target`` bytes, as an API returns."""
    rng = random.Random(target)
    items: list[dict[str, Any]] = []
    while True:
        n = len(items)
        items.append(
            {
                "id": f"pi_{rng.getrandbits(64):016x}",
                "object": "payment_intent",
                "amount": rng.randrange(100, 100_000),
                "currency": rng.choice(["eur", "usd", "gbp"]),
                "status": rng.choice(["succeeded", "processing", "requires_action"]),
                "created": 1_760_000_000 + n * 37,
                "customer": f"cus_{rng.getrandbits(48):012x}",
                "description": f"Order #{10_000 + n} for customer",
                "metadata": {"order_id": str(10_000 + n), "channel": "web"},
                "livemode": False,
            }
        )
        body = json.dumps({"object": "list", "data": items, "has_more": True}).encode()
        if len(body) >= target:
            return body
