"""The stored format of a record, defined once: layout, MAC, compression, encryption.

A stored response is replayed to a client as if the server had just produced it, so a
record is a trust boundary. Every record carries a MAC (HMAC-SHA256, 128 bits) keyed
from ``SECRET_KEY`` and bound to the record's id, so a byte flipped in Redis, a record
copied under another key or one planted with a plain ``SET`` is refused, never replayed.
Bodies may also be compressed (zstd when ``zstandard`` is installed, else zlib) and
encrypted (AES-GCM, ``ENCRYPTION_KEYS``).

Layout (binary, big-endian; offsets in bytes)::

    0     state        R running, D done, E error, U unreplayable
    1     waiter flag  '-', or 'w' once a duplicate waits (set by the store; not MAC'd)
    2     version      '1'
    3     flags        bits 0-1 compression (0 none, 1 zlib, 2 zstd), bit 2 encrypted,
                       bit 3 kind (0 http, 1 run), bit 4 (running records) written under
                       the "refuse" outcome-unknown policy, bits 5-7 the door (0 unknown)
    running records:
    4:16  fencing token (12 bytes; the store compares it before any write)
    16:22 created ms
    22    fingerprint length, then the fingerprint
    final records:
    4:10  created ms
    10:14 elapsed ms
    14:16 HTTP status (0 for run() records)
    16    fingerprint length, then the fingerprint
          original payload length (varint), only when compressed
    then: meta length (varint), meta (varint of 2 x scope length, + 1 when the key is a
          packed UUID; scope; key, 16 bytes when packed; encrypted: nonce, ciphertext,
          tag), payload (final records; encrypted: nonce, ciphertext, tag), for a
          running record with bit 4: its hold, 12 ASCII digits of ms (how long the record
          outlives its lease; the store's scripts read it there, 28 bytes from the end),
          and the 16-byte MAC over the record id and every byte but the flag and the MAC.

Meta stays outside the compressed payload so that listing a record (a read of its first
bytes) shows its scope, key and status without reading the body.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .events import Door, Label

RUNNING_CHAR = b"R"
#: Flag bit of a running record that must not be run again if its owner dies: the store
#: keeps it ``hold`` ms past its lease, and a claim then finds it abandoned.
REFUSE_FLAG = 16
#: The hold of a :data:`REFUSE_FLAG` record: ASCII digits just before the MAC.
HOLD_DIGITS = 12
WAITER_FLAG_OFFSET = 1
NO_WAITERS = b"-"
VERSION = b"1"
#: Where a running record keeps its fencing token; the store's scripts compare it there.
TOKEN_SLICE = slice(4, 16)
TOKEN_BYTES = 12
MAC_BYTES = 16
RID_BYTES = 12

_ZLIB, _ZSTD = 1, 2
_ENCRYPTED = 4
_NONCE = 12
_GCM_TAG = 16

_RUNNING_HEAD = struct.Struct(">cccc12s6sB")
_FINAL_HEAD = struct.Struct(">cccc6sIHB")
_FINAL_ELAPSED_STATUS = struct.Struct(">IH")
_COMPRESSION_NAMES = {0: None, _ZLIB: "zlib", _ZSTD: "zstd", 3: None}
_VERSION_BYTE = VERSION[0]


class State(Label):
    """The life of a record."""

    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    UNREPLAYABLE = "unreplayable"


class Kind(Label):
    """Which lifecycle wrote a record: HTTP requests or ``run()`` calls (and jobs)."""

    HTTP = "http"
    RUN = "run"


STATES: tuple[State, ...] = tuple(State)
_STATE_CHAR = {State.RUNNING: b"R", State.DONE: b"D", State.ERROR: b"E", State.UNREPLAYABLE: b"U"}
_CHAR_STATE = {c[0]: s for s, c in _STATE_CHAR.items()}
_KIND_BITS = {Kind.HTTP: 0, Kind.RUN: 8}
_BITS_KIND = {b: k for k, b in _KIND_BITS.items()}
#: Each door's code in bits 5-7 of the flags (0: not recorded). Written out, never derived
#: from the enum's order, so adding or reordering a door relabels no stored record.
DOOR_CODES = {
    Door.MIDDLEWARE: 1,
    Door.DECORATOR: 2,
    Door.DRF: 3,
    Door.RUN: 4,
    Door.CELERY: 5,
    Door.TASKS: 6,
    Door.EDGE: 7,
}
if set(DOOR_CODES) != set(Door):  # pragma: no cover - a new door without a code
    raise ImportError(f"records.DOOR_CODES needs a code for {set(Door) - set(DOOR_CODES)}")
_DOOR_BITS: dict[Door | None, int] = {None: 0, **{d: code << 5 for d, code in DOOR_CODES.items()}}
_BITS_DOOR = {code << 5: d for d, code in DOOR_CODES.items()}


_KIND_CODE = {Kind.HTTP: b"h", Kind.RUN: b"r"}


class IntegrityError(Exception):
    """A record failed verification (tampered, copied, planted) or cannot be decoded."""


@dataclass(frozen=True, slots=True)
class Record:
    """A record as the engine sees it: verified, decrypted and decompressed."""

    state: State
    kind: Kind
    scope: bytes
    key: bytes
    fingerprint: bytes
    created_ms: int
    finished_ms: int | None = None
    status: int | None = None
    payload: bytes = b""
    token: bytes = b""
    #: The door the first request or call came through (``None``: not recorded).
    door: Door | None = None
    #: A running record under the ``refuse`` policy: how long (ms) it outlives its lease.
    hold_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Header:
    """What a record's first bytes tell, unverified: for listing, counting and purging."""

    state: State
    kind: Kind
    door: Door | None
    created_ms: int
    finished_ms: int | None
    status: int | None
    fingerprint: bytes
    token: bytes
    scope: bytes | None
    key: bytes | None
    #: Where the payload starts, when the meta ends inside the bytes given.
    payload_offset: int | None
    #: Payload bytes before compression (compressed records, or complete ones).
    original_payload: int | None
    compression: str | None
    encrypted: bool


def text_bytes(value: str | bytes) -> bytes:
    """``value`` as bytes (str as UTF-8), the form scopes and keys are hashed and stored in."""
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def record_id(kind: Kind, scope: str | bytes, key: str | bytes) -> bytes:
    """The 96-bit id of one record: no two (kind, scope, key) triples share one.

    The scope is length-prefixed, so ``("a:b", "c")`` and ``("a", "b:c")`` differ. The id is
    not keyed: rotating ``SECRET_KEY`` must not make stored records unreachable.
    """
    s, k = text_bytes(scope), text_bytes(key)
    return hashlib.blake2b(
        _KIND_CODE[kind] + b"%d:" % len(s) + s + k, digest_size=RID_BYTES
    ).digest()


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def derive_key(secret: str | bytes, purpose: bytes) -> bytes:
    """A key for ``purpose`` derived from a secret with a salt, as Django's signing does."""
    return hashlib.sha256(b"django_idempotency.records." + purpose + text_bytes(secret)).digest()


class _Compressor:
    """zlib, or zstd when ``zstandard`` is installed; contexts kept per thread.

    Records compressed with either are read whichever this process writes with.
    """

    def __init__(self, zstd: bool = True) -> None:
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            self._module: Any = None
        else:
            self._module = zstandard
        self.code = _ZSTD if zstd and self._module is not None else _ZLIB
        self._local = threading.local()

    def compress(self, data: bytes) -> bytes:
        if self.code == _ZLIB:
            # Raw deflate, fast level, small state: a 256 KiB deflate state per call would
            # cost more than the compression.
            c = zlib.compressobj(1, zlib.DEFLATED, -12, 4)
            return c.compress(data) + c.flush()
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            # Level -1, zstd's first fast level: a 4 KiB JSON body still shrinks to about a
            # quarter, at two thirds of level 1's time and a third of its decompression.
            cctx = self._local.cctx = self._module.ZstdCompressor(
                level=-1, write_content_size=False, write_checksum=False
            )
        return bytes(cctx.compress(data))

    def decompress(self, code: int, data: bytes, size: int) -> bytes:
        if code == _ZLIB:
            out = zlib.decompress(data, -15, size or 1)
        elif self._module is None:
            raise IntegrityError(
                "the record is compressed with zstd, but zstandard is not installed here: "
                "install django-idempotency[zstd] on every process that reads records"
            )
        else:
            dctx = getattr(self._local, "dctx", None)
            if dctx is None:
                dctx = self._local.dctx = self._module.ZstdDecompressor()
            out = bytes(dctx.decompress(data, max_output_size=size))
        if len(out) != size:
            raise IntegrityError("the record's payload does not decompress to its length")
        return out


class _Cipher:
    """AES-GCM over a rotating list of keys: the first encrypts, all decrypt."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aeads = [AESGCM(k) for k in keys]

    def encrypt(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aeads[0].encrypt(nonce, data, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        nonce, sealed = blob[:_NONCE], blob[_NONCE:]
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
        raise IntegrityError("the record was encrypted with a key not in ENCRYPTION_KEYS")


class Sealer:
    """Builds and verifies stored records: the one place that knows the byte layout.

    ``mac_secrets`` are ``SECRET_KEY`` then its fallbacks (the first signs, all verify);
    ``encryption_keys`` enable AES-GCM (the first encrypts, all decrypt);
    ``compress_min_bytes`` is the payload size from which compression is tried
    (``None``: never); zstd is used when ``zstandard`` is installed, unless ``zstd`` is
    false. Any record is read whatever this process writes with.
    """

    def __init__(
        self,
        mac_secrets: Iterable[str | bytes],
        *,
        encryption_keys: Sequence[bytes] = (),
        compress_min_bytes: int | None = 1024,
        zstd: bool = True,
    ) -> None:
        #: HMAC-SHA256 keys: the first signs, every one verifies.
        self._macs = [derive_key(s, b"mac") for s in mac_secrets]
        if not self._macs:
            raise ValueError("at least one MAC secret is needed")
        self._cipher = _Cipher(encryption_keys) if encryption_keys else None
        self._compress_min = compress_min_bytes
        self._compressor = _Compressor(zstd)
        self._last_meta: tuple[bytes, bytes, bytes, bytes] = (b"", b"", b"", b"")

    @property
    def encrypts(self) -> bool:
        """Whether new records are encrypted."""
        return self._cipher is not None

    # -- MAC --------------------------------------------------------------------------

    def _tag(self, mac: bytes, rid: bytes, raw: bytes, end: int) -> bytes:
        # The waiter flag (byte 1) is set by the store while the record runs. One
        # one-shot HMAC of joined bytes is cheaper than an HMAC object fed three times.
        return hmac.digest(mac, b"".join((rid, raw[:1], raw[2:end])), "sha256")[:MAC_BYTES]

    def _sign(self, rid: bytes, unsigned: bytes) -> bytes:
        return unsigned + self._tag(self._macs[0], rid, unsigned, len(unsigned))

    def _verify(self, rid: bytes, raw: bytes) -> None:
        end = len(raw) - MAC_BYTES
        if end < 4:
            raise IntegrityError("the record is too short to be one")
        tag = raw[end:]
        for mac in self._macs:
            if hmac.compare_digest(tag, self._tag(mac, rid, raw, end)):
                return
        raise IntegrityError(
            "the record's MAC does not verify: it was altered, copied from another key, "
            "written by something other than this app, or signed with a SECRET_KEY that is "
            "neither SECRET_KEY nor in SECRET_KEY_FALLBACKS"
        )

    # -- meta -------------------------------------------------------------------------

    def _meta(self, rid: bytes, scope: bytes, key: bytes) -> bytes:
        # A request builds the same meta twice, for its claim and for its final record:
        # the last one built is kept (one tuple, swapped whole, so threads cannot tear it).
        last = self._last_meta
        if last[0] == rid and last[1] == scope and last[2] == key:
            return last[3]
        meta = _join_meta(scope, key)
        if self._cipher is not None:
            meta = self._cipher.encrypt(meta, rid + b"meta")
        stored = _varint(len(meta)) + meta
        self._last_meta = (rid, scope, key, stored)
        return stored

    def _open_meta(self, rid: bytes | None, blob: bytes, encrypted: bool) -> tuple[bytes, bytes]:
        if encrypted:
            if self._cipher is None or rid is None:
                raise IntegrityError("the record is encrypted and ENCRYPTION_KEYS is not set")
            blob = self._cipher.decrypt(blob, rid + b"meta")
        return _split_meta(blob)

    # -- building ---------------------------------------------------------------------

    def running(
        self,
        rid: bytes,
        kind: Kind,
        scope: bytes,
        key: bytes,
        token: bytes,
        fingerprint: bytes,
        created_ms: int,
        door: Door | None = None,
        hold_ms: int | None = None,
    ) -> bytes:
        """The running record a claim creates: owner token, fingerprint and meta.

        With ``hold_ms`` (the ``refuse`` policy) the store keeps it that long after its
        lease runs out, and a claim then finds it abandoned instead of running again.
        """
        flags = _KIND_BITS[kind] | _DOOR_BITS[door]
        tail = b""
        if hold_ms is not None:
            flags |= REFUSE_FLAG
            tail = b"%0*d" % (HOLD_DIGITS, min(hold_ms, 10**HOLD_DIGITS - 1))
        flags |= _ENCRYPTED if self._cipher is not None else 0
        head = _RUNNING_HEAD.pack(
            RUNNING_CHAR,
            NO_WAITERS,
            VERSION,
            bytes((flags,)),
            token,
            created_ms.to_bytes(6, "big"),
            len(fingerprint),
        )
        return self._sign(rid, head + fingerprint + self._meta(rid, scope, key) + tail)

    def seal(self, rid: bytes, record: Record) -> bytes:
        """A final record (done, error or unreplayable) as stored bytes."""
        payload = record.payload
        flags = _KIND_BITS[record.kind] | _DOOR_BITS[record.door]
        extra = b""
        if self._compress_min is not None and len(payload) >= self._compress_min:
            packed = self._compressor.compress(payload)
            if len(packed) + 3 < len(payload):
                flags |= self._compressor.code
                extra = _varint(len(payload))
                payload = packed
        if self._cipher is not None:
            flags |= _ENCRYPTED
            payload = self._cipher.encrypt(payload, rid + b"payload")
        finished = record.finished_ms if record.finished_ms is not None else record.created_ms
        elapsed = min(max(finished - record.created_ms, 0), 0xFFFFFFFF)
        head = _FINAL_HEAD.pack(
            _STATE_CHAR[record.state],
            NO_WAITERS,
            VERSION,
            bytes((flags,)),
            record.created_ms.to_bytes(6, "big"),
            elapsed,
            record.status or 0,
            len(record.fingerprint),
        )
        return self._sign(
            rid,
            head + record.fingerprint + extra + self._meta(rid, record.scope, record.key) + payload,
        )

    # -- reading ----------------------------------------------------------------------

    def open(self, rid: bytes, raw: bytes) -> Record:
        """Verify and decode a stored record; :class:`IntegrityError` if it is not ours."""
        self._verify(rid, raw)
        end = len(raw) - MAC_BYTES
        try:
            state, flags, token, created, elapsed, status, fingerprint, original, pos, meta_end = (
                _layout(raw)
            )
            if meta_end > end:
                raise IntegrityError("the record is cut inside its meta")
            scope, key = self._open_meta(rid, raw[pos:meta_end], bool(flags & _ENCRYPTED))
            head = (state, _BITS_KIND[flags & 8], scope, key, fingerprint, created)
            door = _BITS_DOOR.get(flags & 224)
            if state is State.RUNNING:
                hold = int(raw[end - HOLD_DIGITS : end]) if flags & REFUSE_FLAG else None
                return Record(*head, token=token, door=door, hold_ms=hold)
            payload = raw[meta_end:end]
            if flags & _ENCRYPTED:
                if self._cipher is None:
                    raise IntegrityError("the record is encrypted and ENCRYPTION_KEYS is not set")
                payload = self._cipher.decrypt(payload, rid + b"payload")
            if original is not None:
                payload = self._compressor.decompress(flags & 3, payload, original)
            return Record(*head, created + elapsed, status or None, payload, door=door)
        except IntegrityError:
            raise
        except (ValueError, IndexError, KeyError, struct.error) as exc:
            raise IntegrityError(f"the record cannot be decoded: {exc}") from exc

    def meta(self, rid: bytes | None, raw: bytes) -> tuple[bytes, bytes] | None:
        """Scope and key from a record's first bytes (unverified), decrypting if needed.

        ``None`` when ``raw`` is cut before the meta ends, or it cannot be read here.
        """
        try:
            _, flags, *_, pos, meta_end = _layout(raw)
            if meta_end > len(raw):
                return None
            return self._open_meta(rid, raw[pos:meta_end], bool(flags & _ENCRYPTED))
        except (IntegrityError, ValueError, IndexError, struct.error):
            return None


def held_ms(raw: bytes) -> int | None:
    """The hold of a whole stored running record under the ``refuse`` policy, else ``None``
    (unverified: for a store keeping it past its lease, and for listing it)."""
    if raw[:1] != RUNNING_CHAR or len(raw) < 4 or not raw[3] & REFUSE_FLAG:
        return None
    digits = raw[-MAC_BYTES - HOLD_DIGITS : -MAC_BYTES]
    return int(digits) if digits.isdigit() else None


def _join_meta(scope: bytes, key: bytes) -> bytes:
    """Scope and key as stored: ``varint(2 * len(scope) + packed)``, scope, key.

    Most clients send UUIDs as keys: a canonical lower-case one is stored as its 16 bytes
    (the low bit of the length says so) instead of 36 characters, on every record.
    """
    if len(key) == 36 and key[8] == key[13] == key[18] == key[23] == 45:  # "-"
        digits = key.replace(b"-", b"")
        # Only the canonical spelling packs (lower case, dashes only where they go), so
        # unpacking gives the client's key back; 16 bytes out of 32 digits also rules out
        # the whitespace fromhex would skip.
        if len(digits) == 32 and digits == digits.lower():
            try:
                packed = bytes.fromhex(digits.decode("ascii"))
            except ValueError:  # not hex, or not ASCII
                packed = b""
            if len(packed) == 16:
                return _varint(2 * len(scope) + 1) + scope + packed
    return _varint(2 * len(scope)) + scope + key


def _split_meta(meta: bytes) -> tuple[bytes, bytes]:
    n, pos = _read_varint(meta, 0)
    scope, key = meta[pos : pos + (n >> 1)], meta[pos + (n >> 1) :]
    if n & 1:
        if len(key) != 16:
            raise ValueError("a packed key is 16 bytes")
        h = key.hex().encode()
        key = b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))
    return scope, key


def _layout(raw: bytes) -> tuple[State, int, bytes, int, int, int, bytes, int | None, int, int]:
    """The one reading of a record's header (unverified), from its first bytes.

    Returns state, flags, token (running records), created ms, elapsed ms and status
    (final records, else 0), fingerprint, the payload's length before compression
    (``None`` when not compressed), and where the meta starts and ends (the end may lie
    past ``raw`` when only its first bytes were read). ``ValueError`` when ``raw`` does not
    start like a record of this format version.
    """
    state = _CHAR_STATE.get(raw[0]) if len(raw) >= 4 and raw[2] == _VERSION_BYTE else None
    if state is None:
        raise ValueError("not an idempotency record of a known format version")
    flags = raw[3]
    original = None
    if state is State.RUNNING:
        token, created, elapsed, status = raw[4:16], raw[16:22], 0, 0
        start = _RUNNING_HEAD.size
    else:
        token, created = b"", raw[4:10]
        elapsed, status = _FINAL_ELAPSED_STATUS.unpack_from(raw, 10)
        start = _FINAL_HEAD.size
    pos = start + raw[start - 1]
    fingerprint = raw[start:pos]
    if len(fingerprint) != pos - start:
        raise ValueError("the record is cut inside its fingerprint")
    if state is not State.RUNNING and flags & 3:
        original, pos = _read_varint(raw, pos)
    meta_len, pos = _read_varint(raw, pos)
    created_ms = int.from_bytes(created, "big")
    return (
        state,
        flags,
        token,
        created_ms,
        elapsed,
        status,
        fingerprint,
        original,
        pos,
        pos + meta_len,
    )


def peek(raw: bytes) -> Header:
    """Decode the header of a record (or of its first bytes) without verifying it.

    Raises ``ValueError`` when ``raw`` does not start like a record.
    """
    try:
        state, flags, token, created, elapsed, status, fingerprint, original, pos, meta_end = (
            _layout(raw)
        )
    except (IndexError, struct.error) as exc:
        raise ValueError(f"not an idempotency record: {exc}") from exc
    complete = meta_end <= len(raw)
    scope = key = None
    if complete and not flags & _ENCRYPTED:
        scope, key = _split_meta(raw[pos:meta_end])
    return Header(
        state=state,
        kind=_BITS_KIND[flags & 8],
        door=_BITS_DOOR.get(flags & 224),
        created_ms=created,
        finished_ms=None if state is State.RUNNING else created + elapsed,
        status=status or None,
        fingerprint=fingerprint,
        token=token,
        scope=scope,
        key=key,
        payload_offset=meta_end if complete else None,
        original_payload=original,
        compression=_COMPRESSION_NAMES[flags & 3],
        encrypted=bool(flags & _ENCRYPTED),
    )


# -- HTTP payload ------------------------------------------------------------------------

#: Header names stored as one byte each: most responses carry a few of these.
_COMMON_HEADERS = (
    "Content-Type",
    "Location",
    "Vary",
    "Allow",
    "Cache-Control",
    "Content-Language",
    "Content-Disposition",
    "ETag",
    "Last-Modified",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "Expires",
    "Link",
    "Retry-After",
)
_HEADER_CODE = {name.lower(): i for i, name in enumerate(_COMMON_HEADERS)}

#: Header values stored as one byte each: what Django and DRF send on most responses.
#: Append only: a code, once written to a record, must keep its meaning.
_COMMON_VALUES = (
    "application/json",
    "text/html; charset=utf-8",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/problem+json",
    "application/octet-stream",
    "Accept",
    "Cookie",
    "Accept, Cookie",
    "Accept-Language",
    "Cookie, Accept-Language",
    "Accept, Cookie, Accept-Language",
    "Origin",
    "POST, OPTIONS",
    "POST, PATCH, OPTIONS",
    "GET, POST, HEAD, OPTIONS",
    "GET, PUT, PATCH, DELETE, HEAD, OPTIONS",
    "PUT, PATCH, OPTIONS",
    "DENY",
    "SAMEORIGIN",
    "nosniff",
    "same-origin",
    "strict-origin-when-cross-origin",
    "no-cache",
    "no-store",
    "private",
    "max-age=0, no-cache, no-store, must-revalidate, private",
    "1",
    "true",
)
_VALUE_CODE = {value: i for i, value in enumerate(_COMMON_VALUES)}


def encode_http(headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """Response headers and body as one payload (the status lives in the record header).

    Each header is its name (``0`` and a code for a common one, else the length and the
    name) then its value (``0`` and a code for a common one, else the length + 1 and the
    value).
    """
    parts: list[bytes] = []
    count = 0
    for name, value in headers:
        count += 1
        code = _HEADER_CODE.get(name.lower())
        if code is not None and name == _COMMON_HEADERS[code]:
            parts.append(b"\x00" + bytes((code,)))
        else:
            raw_name = name.encode("latin-1")
            parts.append(_varint(len(raw_name)) + raw_name)
        code = _VALUE_CODE.get(value)
        if code is not None:
            parts.append(b"\x00" + bytes((code,)))
        else:
            raw_value = value.encode("latin-1")
            parts.append(_varint(len(raw_value) + 1) + raw_value)
    return _varint(count) + b"".join(parts) + body


def decode_http(payload: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """The ``(headers, body)`` of an HTTP payload built by :func:`encode_http`."""
    count, pos = _read_varint(payload, 0)
    headers: list[tuple[str, str]] = []
    for _ in range(count):
        if payload[pos] == 0:
            name = _COMMON_HEADERS[payload[pos + 1]]
            pos += 2
        else:
            n, pos = _read_varint(payload, pos)
            name = payload[pos : pos + n].decode("latin-1")
            pos += n
        if payload[pos] == 0:
            value = _COMMON_VALUES[payload[pos + 1]]
            pos += 2
        else:
            n, pos = _read_varint(payload, pos)
            value = payload[pos : pos + n - 1].decode("latin-1")
            pos += n - 1
        headers.append((name, value))
    return headers, payload[pos:]
