"""The promises an endpoint that takes ``Idempotency-Key`` keeps, checked by one battery.

:class:`Battery` sends a short, fixed series of requests through a *transport* and judges
each promise from the responses alone, so the same checks serve ``assert_idempotent``
(Django's test client) and ``idempotency-conformance`` (any URL over HTTP). A transport
opens a sender; a sender sends one :class:`Request` and returns its :class:`Reply`.
Nothing here knows Django or a socket. The promises are described in the conformance
tool's documentation, one row each.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..http import PROBLEM_CONTENT_TYPE

#: A key no parser of the header accepts: a quoted string that never ends.
MALFORMED_KEY = '"unterminated'
#: The member added to a JSON object (or form) to change a request's body.
CHANGED_MARKER = "idempotency_conformance"
#: The most concurrent duplicates a battery sends.
MAX_CONCURRENCY = 200
CONFLICT_MODES = ("wait", "reject")
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Request:
    """One request the battery sends (the transport knows where to)."""

    method: str
    headers: Mapping[str, str]
    body: bytes
    #: The idempotency key among ``headers``.
    key: str


@dataclass(frozen=True)
class Reply:
    """One response: header names lower-cased; ``error`` says why there is none (status 0)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    def header(self, name: str) -> str:
        """The value of header ``name`` (any case), or ``""``."""
        return self.headers.get(name.lower(), "")

    def marked(self, replay_header: str) -> bool:
        """Whether the response says it is a replay (``<replay_header>: true``)."""
        return self.header(replay_header).strip().lower() == "true"

    @property
    def succeeded(self) -> bool:
        """A 2xx or 3xx response."""
        return 200 <= self.status < 400

    @property
    def problem(self) -> bool:
        """An RFC 9457 problem details document."""
        return media_type(self.header("content-type")) == PROBLEM_CONTENT_TYPE

    def differences(self, other: Reply) -> list[str]:
        """What differs from ``other``: status, content type, location, body (empty: nothing)."""
        compared = {
            "status": (self.status, other.status),
            "content type": (self.header("content-type"), other.header("content-type")),
            "location": (self.header("location"), other.header("location")),
            "body": (self.body, other.body),
        }
        return [what for what, (mine, theirs) in compared.items() if mine != theirs]


Sender = Callable[[Request], Reply]
#: Opens a sender, ready to send one request; called once per request, from any thread.
Transport = Callable[[], Sender]


class Verdict(str, Enum):
    """How a promise fared."""

    def __str__(self) -> str:
        return self.value

    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True)
class Exchange:
    """A request and its reply, shown as evidence; ``label`` says which one it was."""

    label: str
    request: Request
    reply: Reply


@dataclass(frozen=True)
class Result:
    """One promise's row.

    ``reason`` is a stable code saying what broke (``""`` on a pass), for programs that
    read the report: ``transport-error``, ``error-status``, ``marked-as-replay``,
    ``not-marked``, ``differs``, ``accepted-changed-body``, ``accepted-malformed-key``,
    ``not-a-problem``, ``wrong-status``, ``ran-more-than-once``, ``none-ran``,
    ``rejected-instead-of-waiting``, ``side-effects``.
    """

    name: str
    title: str
    verdict: Verdict
    detail: str = ""
    reason: str = ""
    evidence: tuple[Exchange, ...] = ()

    @property
    def failed(self) -> bool:
        """Whether the promise is broken."""
        return self.verdict is Verdict.FAIL

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data (bodies decoded as UTF-8, errors replaced)."""
        return {
            "name": self.name,
            "title": self.title,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "detail": self.detail,
            "evidence": [
                {
                    "label": e.label,
                    "request": {
                        "method": e.request.method,
                        "key": e.request.key,
                        "headers": _redacted(e.request.headers),
                        "body": e.request.body.decode("utf-8", "replace"),
                    },
                    "response": {
                        "status": e.reply.status,
                        "headers": _redacted(e.reply.headers),
                        "body": e.reply.body.decode("utf-8", "replace"),
                        "error": e.reply.error,
                    },
                }
                for e in self.evidence
            ],
        }


#: Headers whose values a report never shows: reports end up in CI logs.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def _redacted(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: "<redacted>" if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}


def media_type(content_type: str) -> str:
    """``content_type`` without its parameters, lower-cased."""
    return content_type.split(";")[0].strip().lower()


def is_json(content_type: str) -> bool:
    """Whether ``content_type`` is JSON (``application/json`` or a ``+json`` type)."""
    media = media_type(content_type)
    return media == "application/json" or media.endswith("+json")


def changed_body(body: bytes, content_type: str) -> bytes | None:
    """``body`` changed the way a client's mistake would change it, or ``None`` if empty.

    A JSON object gains a member and a form a field, so a server that compares parsed
    payloads sees the change too; other bodies get bytes appended.
    """
    if not body:
        return None
    marker = uuid.uuid4().hex
    if is_json(content_type):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return json.dumps({**data, CHANGED_MARKER: marker}).encode()
        if isinstance(data, list):
            return json.dumps([*data, marker]).encode()
    if media_type(content_type) == FORM:
        fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
        return urlencode([*fields, (CHANGED_MARKER, marker)]).encode("latin-1")
    return body + b"\n" + marker.encode()


HeadersFor = Callable[[bytes], Mapping[str, str]]


@dataclass(frozen=True)
class Battery:
    """The requests that check the promises, and how to judge them.

    ``headers`` are sent with every request (a mapping, or a callable given the body that
    returns them, for requests signed over their body); ``content_type`` goes with a
    non-empty body unless ``headers`` name one. ``executed``, when given, counts the side
    effects so far (rows created, calls to a fake gateway).
    """

    method: str
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] | HeadersFor = field(default_factory=dict)
    key_header: str = "Idempotency-Key"
    replay_header: str = "Idempotent-Replayed"
    concurrency: int = 20
    conflict: str = "wait"
    executed: Callable[[], int] | None = None
    #: Seconds the concurrent duplicates may take to line up before they are released.
    barrier_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.concurrency, int) or not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(
                f"concurrency must be an integer from 1 to {MAX_CONCURRENCY}, "
                f"got {self.concurrency!r}"
            )
        if self.conflict not in CONFLICT_MODES:
            raise ValueError(f"conflict must be 'wait' or 'reject', got {self.conflict!r}")
        if not self.method or not self.method.isalpha():
            raise ValueError(f"method must be an HTTP method such as 'POST', got {self.method!r}")

    def request(self, key: str, body: bytes | None = None) -> Request:
        """The request carrying ``key`` (and ``body``, default the battery's)."""
        body = self.body if body is None else body
        extra = self.headers(body) if callable(self.headers) else self.headers
        headers = {}
        if body and not any(name.lower() == "content-type" for name in extra):
            headers["Content-Type"] = self.content_type
        headers.update(extra)
        headers[self.key_header] = key
        return Request(self.method.upper(), headers, body, key)

    def run(self, transport: Transport) -> list[Result]:
        """Send the requests through ``transport``; one :class:`Result` per promise."""
        count = self.executed or (lambda: 0)
        start = count()
        first, replay, changed = self._sequential(transport)
        after_sequential = count()
        malformed = self._malformed(transport)
        after_malformed = count()
        if first.failed:
            why = "the first request did not succeed; fix the request first"
            later = [
                _not_applicable(name, why) for name in (EXACTLY_ONCE, DUPLICATES, SIDE_EFFECTS)
            ]
            return [first, replay, changed, malformed, *later]
        once, duplicates = self._concurrent(transport)
        executions = {
            "the retried key": (after_sequential - start, 1),
            "the malformed key": (after_malformed - after_sequential, 0),
        }
        if self.concurrency > 1:
            executions["the concurrent key"] = (count() - after_malformed, 1)
        effects = self._side_effects(executions)
        return [first, replay, changed, malformed, once, duplicates, effects]

    def _send(self, transport: Transport, label: str, request: Request) -> Exchange:
        return Exchange(label, request, transport()(request))

    def _sequential(self, transport: Transport) -> tuple[Result, Result, Result]:
        key = new_key("retried")
        first = self._send(transport, "first", self.request(key))
        reply = first.reply
        if reply.error:
            why, detail = "transport-error", reply.error
        elif reply.marked(self.replay_header):
            why, detail = "marked-as-replay", "a new key's response is marked as a replay"
        elif not reply.succeeded:
            why, detail = "error-status", f"status {reply.status}, expected 2xx or 3xx"
        else:
            passed = _pass(FIRST, f"status {reply.status}", (first,))
            retry = self._send(transport, "retry", self.request(key))
            return passed, self._judge_replay(first, retry), self._changed(transport, key, first)
        skip = "the first request did not succeed"
        failed = _fail(FIRST, detail, why, (first,))
        return failed, _not_applicable(REPLAY, skip), _not_applicable(CHANGED, skip)

    def _judge_replay(self, first: Exchange, retry: Exchange) -> Result:
        evidence = (first, retry)
        reply = retry.reply
        if reply.error:
            return _fail(REPLAY, reply.error, "transport-error", evidence)
        differs = reply.differences(first.reply)
        if not reply.marked(self.replay_header):
            detail = f"the retry is not marked with {self.replay_header}: true"
            if differs:
                detail += f", and its {_differ(differs)}: it ran again"
            return _fail(REPLAY, detail, "not-marked", evidence)
        if differs:
            detail = f"the replay's {_differ(differs)} from the first response"
            return _fail(REPLAY, detail, "differs", evidence)
        detail = f"status {reply.status}, {len(reply.body)} identical bytes"
        return _pass(REPLAY, detail, evidence)

    def _changed(self, transport: Transport, key: str, first: Exchange) -> Result:
        body = changed_body(self.body, self.content_type)
        if body is None:
            return _not_applicable(CHANGED, "the request has no body to change")
        changed = self._send(transport, "changed body", self.request(key, body))
        did = (
            "replayed the first response" if changed.reply.marked(self.replay_header) else "ran it"
        )
        accepted = f"the server ignored the change and {did}"
        return _refused(CHANGED, 422, changed, (first, changed), accepted, "accepted-changed-body")

    def _malformed(self, transport: Transport) -> Result:
        bad = self._send(transport, "malformed key", self.request(MALFORMED_KEY))
        accepted = f"the key {MALFORMED_KEY} was accepted"
        return _refused(MALFORMED, 400, bad, (bad,), accepted, "accepted-malformed-key")

    def _burst(self, transport: Transport, request: Request) -> list[Exchange]:
        """Send ``request`` from ``concurrency`` threads at once (released by a barrier)."""
        n = self.concurrency
        barrier = threading.Barrier(n)
        exchanges: list[Exchange | None] = [None] * n
        raised: list[BaseException] = []

        def fire(i: int) -> None:
            try:
                send = transport()
                barrier.wait(self.barrier_timeout)
                exchanges[i] = Exchange(f"duplicate {i + 1}", request, send(request))
            except BaseException as exc:  # re-raised in the caller's thread below
                barrier.abort()
                raised.append(exc)

        threads = [threading.Thread(target=fire, args=(i,), daemon=True) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if raised:
            # The other threads' BrokenBarrierError only echoes the failure that aborted it.
            real = [e for e in raised if not isinstance(e, threading.BrokenBarrierError)]
            raise (real or raised)[0]
        return [e for e in exchanges if e is not None]

    def _concurrent(self, transport: Transport) -> tuple[Result, Result]:
        n = self.concurrency
        if n < 2:
            why = "concurrency is 1: no concurrent duplicates were sent"
            return _not_applicable(EXACTLY_ONCE, why), _not_applicable(DUPLICATES, why)
        burst = self._burst(transport, self.request(new_key("concurrent")))
        ran = [e for e in burst if e.reply.succeeded and not e.reply.marked(self.replay_header)]
        errors = [e for e in burst if e.reply.error]
        if len(ran) != 1:
            reason = "ran-more-than-once" if ran else "none-ran"
            detail = f"{len(ran)} of {n} concurrent duplicates ran (not marked as a replay)"
            if errors:
                detail += f"; {len(errors)} got no response ({errors[0].reply.error})"
            evidence = tuple(ran[:2]) or tuple(burst[:2])
            once = _fail(EXACTLY_ONCE, detail, reason, evidence)
            why = "not exactly one of the duplicates ran"
            return once, _not_applicable(DUPLICATES, why)
        owner = ran[0]
        once = _pass(EXACTLY_ONCE, f"1 of {n} ran, status {owner.reply.status}", (owner,))
        return once, self._judge_duplicates(owner, [e for e in burst if e is not owner])

    def _judge_duplicates(self, owner: Exchange, others: list[Exchange]) -> Result:
        replays = [
            e
            for e in others
            if e.reply.marked(self.replay_header) and not e.reply.differences(owner.reply)
        ]
        conflicts = [e for e in others if e.reply.status == 409]
        wrong = [e for e in others if e not in replays and e not in conflicts]
        title = TITLES[DUPLICATES] if self.conflict == "wait" else TITLES[REJECTED]
        n = len(others)
        if self.conflict == "wait" and conflicts:
            detail = (
                f"rejecting instead of waiting: {len(conflicts)} of {n} duplicates got "
                f"409 instead of the first response"
            )
            evidence = (owner, conflicts[0])
            return _fail(DUPLICATES, detail, "rejected-instead-of-waiting", evidence, title)
        if self.conflict == "reject":
            bad = [e for e in conflicts if not (e.reply.problem and e.reply.header("retry-after"))]
            if bad:
                detail = "a 409 is not problem+json with Retry-After"
                return _fail(DUPLICATES, detail, "not-a-problem", (owner, bad[0]), title)
        if wrong:
            other = wrong[0].reply
            if other.error:
                what = other.error
            elif not other.marked(self.replay_header):
                what = f"status {other.status}, not marked as a replay"
            else:
                what = f"a replay whose {_differ(other.differences(owner.reply))}"
            detail = f"{len(wrong)} of {n} duplicates did not replay the first response: {what}"
            return _fail(DUPLICATES, detail, "differs", (owner, wrong[0]), title)
        detail = f"{len(replays)} of {n} replayed the first response"
        if conflicts:
            detail += f", {len(conflicts)} got 409 problem+json with Retry-After"
        return _pass(DUPLICATES, detail, (owner,), title)

    def _side_effects(self, executions: Mapping[str, tuple[int, int]]) -> Result:
        if self.executed is None:
            why = "nothing counted them (assert_idempotent(..., executed=...) does)"
            return _not_applicable(SIDE_EFFECTS, why)
        counts = ", ".join(f"{label}: {got}" for label, (got, _) in executions.items())
        wrong = [
            f"{label} {got} (expected {want})"
            for label, (got, want) in executions.items()
            if got != want
        ]
        if wrong:
            detail = "side effects counted for " + "; ".join(wrong)
            return _fail(SIDE_EFFECTS, detail, "side-effects")
        return _pass(SIDE_EFFECTS, counts)


FIRST = "first-request"
REPLAY = "replay"
CHANGED = "changed-body"
MALFORMED = "malformed-key"
EXACTLY_ONCE = "exactly-once"
DUPLICATES = "concurrent-duplicates"
REJECTED = "concurrent-duplicates (reject)"
SIDE_EFFECTS = "side-effects"
#: Every promise, in the order the rows come.
PROMISES = (FIRST, REPLAY, CHANGED, MALFORMED, EXACTLY_ONCE, DUPLICATES, SIDE_EFFECTS)
TITLES = {
    FIRST: "a new key runs: 2xx/3xx, not marked as a replay",
    REPLAY: "a retry replays status and body byte for byte, marked as a replay",
    CHANGED: "the same key with a changed body gets 422 problem+json",
    MALFORMED: "a malformed key gets 400 problem+json",
    EXACTLY_ONCE: "concurrent duplicates run once",
    DUPLICATES: "concurrent duplicates wait for the first and replay it",
    REJECTED: "concurrent duplicates replay the first or get 409 with Retry-After",
    SIDE_EFFECTS: "side effects happen once per key (executed=)",
}


def new_key(check: str) -> str:
    """A fresh key naming the check that sends it."""
    return f"conformance-{check}-{uuid.uuid4().hex}"


def _differ(parts: list[str]) -> str:
    """``["status", "body"]`` -> ``"status and body differ"``."""
    if len(parts) == 1:
        return f"{parts[0]} differs"
    return f"{', '.join(parts[:-1])} and {parts[-1]} differ"


def _not_applicable(name: str, why: str) -> Result:
    return Result(name, TITLES[name], Verdict.NOT_APPLICABLE, why)


def _pass(name: str, detail: str, evidence: tuple[Exchange, ...] = (), title: str = "") -> Result:
    return Result(name, title or TITLES[name], Verdict.PASS, detail, "", evidence)


def _fail(
    name: str, detail: str, reason: str, evidence: tuple[Exchange, ...] = (), title: str = ""
) -> Result:
    return Result(name, title or TITLES[name], Verdict.FAIL, detail, reason, evidence)


def _refused(
    name: str,
    expected: int,
    exchange: Exchange,
    evidence: tuple[Exchange, ...],
    accepted: str,
    accepted_reason: str,
) -> Result:
    """Judge a request the server must refuse with ``expected`` problem+json."""
    reply = exchange.reply
    if reply.error:
        return _fail(name, reply.error, "transport-error", evidence)
    if reply.status == expected and reply.problem:
        return _pass(name, f"{expected} problem+json", evidence)
    if reply.succeeded:
        return _fail(name, f"status {reply.status}: {accepted}", accepted_reason, evidence)
    if reply.status == expected:
        media = reply.header("content-type") or "no content type"
        detail = f"status {expected}, but {media} is not problem+json"
        return _fail(name, detail, "not-a-problem", evidence)
    return _fail(name, f"status {reply.status}, expected {expected}", "wrong-status", evidence)


def render(results: Sequence[Result], *, evidence: bool = True, width: int = 200) -> str:
    """The rows as text, one per promise; a failed row is followed by its evidence."""
    lines = []
    name_width = max(len(r.name) for r in results)
    for result in results:
        verdict = {"pass": "PASS", "fail": "FAIL", "not applicable": "N/A"}[result.verdict.value]
        lines.append(f"{verdict:<4}  {result.name:<{name_width}}  {result.title}")
        if result.detail:
            lines.append(f"{'':<4}  {'':<{name_width}}  -> {result.detail}")
        if evidence and result.failed:
            lines.extend(f"        {line}" for e in result.evidence for line in describe(e, width))
    return "\n".join(lines)


#: Response headers worth showing in evidence.
SHOWN_HEADERS = ("content-type", "location", "retry-after")


def describe(exchange: Exchange, width: int = 200) -> list[str]:
    """An exchange in a few lines: key, status and headers, the start of the body."""
    request, reply = exchange.request, exchange.reply
    head = f"{exchange.label}: {request.method} key={request.key}"
    if reply.error:
        return [f"{head} -> no response: {reply.error}"]
    shown = [f"{name}: {reply.header(name)}" for name in SHOWN_HEADERS if reply.header(name)]
    shown += [f"{k}: {v}" for k, v in reply.headers.items() if k.endswith("replayed")]
    body = reply.body.decode("utf-8", "replace")
    if len(body) > width:
        body = body[:width] + f"... ({len(reply.body)} bytes)"
    return [
        f"{head} -> {reply.status} ({'; '.join(shown) or 'no headers shown'})",
        f"  body: {body}",
    ]
