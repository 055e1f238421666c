"""The Lua scripts and how they are sent.

Key layout
----------
One record is one Redis string::

    {prefix}:{<id>}      the record (see django_idempotency.records for its bytes)

``<id>`` is the record id (96 bits of BLAKE2b over kind, scope and key) as 16 base64url
characters. Client input never reaches a Redis key name, so keys with ``:``, ``*`` or
arbitrary bytes neither collide nor match another scope's SCAN pattern. The braces make
``<id>`` the hash tag: the key lives in one Cluster slot, and so would any future
companion key.

Completions are published on one channel per prefix, ``{prefix}:notify``, and only for
records a duplicate waits on: the message is the record's key name, a space, and ``D``
(completed) or ``R`` (released). Each process subscribes once and fans the message out
to its local waiters (:mod:`.notifier`), so waiting holds no connection of its own.

Scripts (``lua/*.lua``), each one atomic step and one round trip
----------------------------------------------------------------
``claim``     no record: create our running record with a lease (ms TTL) and return 0;
              a final record: return it; a running one: set its waiter flag and return
              it with the lease left.
``complete``  if our token still owns the running record: write the final record with
              its TTL and, if the waiter flag is set, publish ``D``. A late finisher
              writes nothing (fencing).
``release``   if our token owns it: delete it and, if flagged, publish ``R``.
``renew``     if our token owns it: extend the lease.

The token sits at bytes 4-15 of a running record and the state at byte 0
(:data:`django_idempotency.records.TOKEN_SLICE`); the scripts read nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from ...records import TOKEN_SLICE

# The scripts compare string.sub(record, 5, 16): keep them in step with the format.
assert (TOKEN_SLICE.start, TOKEN_SLICE.stop) == (4, 16)


@dataclass(frozen=True)
class Script:
    """One Lua script: its source and SHA1, and the EVALSHA command prefix for one key."""

    source: str
    sha: bytes

    @classmethod
    def load(cls, name: str) -> Script:
        """Read ``lua/<name>.lua`` from the package."""
        source = resources.files(__package__).joinpath(f"lua/{name}.lua").read_text()
        return cls(source, hashlib.sha1(source.encode()).hexdigest().encode())

    def pack(self, key: bytes, args: Sequence[bytes]) -> bytes:
        """``EVALSHA <sha> 1 <key> <args...>`` encoded as RESP, in one buffer.

        redis-py's generic packing costs more than the script call's own round trip on
        loopback; these commands are the whole hot path, so they are encoded here.
        """
        parts = [
            b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n$%d\r\n%b\r\n"
            % (4 + len(args), self.sha, len(key), key)
        ]
        for arg in args:
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        return b"".join(parts)


CLAIM = Script.load("claim")
COMPLETE = Script.load("complete")
RELEASE = Script.load("release")
RENEW = Script.load("renew")
