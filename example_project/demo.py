#!/usr/bin/env python
"""``make demo``: watch django-idempotency prevent a double charge.

Starts the example project under gunicorn (several worker processes) on a private
Redis and a throwaway SQLite database, then plays a client that retries, double-
clicks and redelivers, and checks every promise. Exit status 0 when all hold, 1
when one fails; the last line is ``demo-result: {json}`` for machines.

    python example_project/demo.py [--workers N] [--threads N]

With ``REDIS_URL`` set, that server is used instead of a private one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from exampleproject import embedded_redis  # noqa: E402

WEBHOOK_SECRET = "demo-" + secrets.token_hex(8)
CONCURRENT = 20
WIDTH = min(shutil.get_terminal_size((100, 24)).columns, 100)


# -- output ---------------------------------------------------------------------------

_COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _paint(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _COLOR else text


def bold(text: str) -> str:
    return _paint("1", text)


def dim(text: str) -> str:
    return _paint("2", text)


def say(text: str = "", indent: int = 0) -> None:
    print(" " * indent + text, flush=True)


def explain(text: str) -> None:
    for line in textwrap.wrap(text, WIDTH - 3):
        say(line, 3)


# -- HTTP -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    @property
    def replayed(self) -> str:
        return self.headers.get("idempotent-replayed", "-")

    @property
    def served_by(self) -> str:
        return self.headers.get("x-served-by", "?")

    def json(self) -> Any:
        return json.loads(self.body)

    def short_body(self, limit: int = WIDTH - 7) -> str:
        """The body on one line; a problem document as its title and detail."""
        if self.headers.get("content-type") == "application/problem+json":
            doc = self.json()
            text = f"problem+json: {doc['title']}. {doc['detail']}"
        else:
            text = self.body.decode("utf-8", "replace").strip()
        return text if len(text) <= limit else text[: limit - 3] + "..."


class Client:
    """A tiny HTTP client: one connection per request, like separate retries."""

    def __init__(self, port: int, token: str = "") -> None:
        self.port = port
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            response = conn.getresponse()
            return Reply(
                response.status,
                response.reason,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def charge(self, key: str | None, amount: int) -> Reply:
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        body = json.dumps({"amount": amount, "currency": "eur"}, separators=(",", ":"))
        return self.request("POST", "/api/charges/", body.encode(), headers)


def quoted(key: str) -> str:
    """The key as a Structured Field string, the header's canonical form."""
    return '"' + key + '"'


# -- the checks -----------------------------------------------------------------------


@dataclass
class Promises:
    kept: int = 0
    broken: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        if ok:
            self.kept += 1
            say(_paint("32", "ok    ") + what, 3)
        else:
            self.broken.append(what)
            say(_paint("1;31", "FAIL  ") + what, 3)
        return ok


def show(reply: Reply, label: str = "", body: bool = False) -> None:
    say(
        f"< {label}{bold(f'{reply.status} {reply.reason}')}   "
        f"Idempotent-Replayed: {reply.replayed}   {dim(f'(worker {reply.served_by})')}",
        3,
    )
    if body:
        say(dim(reply.short_body()), 7)


def show_request(method: str, path: str, key: str | None, extra: str = "") -> None:
    key_part = f"   Idempotency-Key: {key}" if key is not None else "   (no Idempotency-Key)"
    say(f"> {method} {path}{key_part}{extra}", 3)


# -- the scripted client --------------------------------------------------------------


def play(client: Client, run: str, p: Promises) -> dict[str, Any]:
    """Steps 1-7; return what the final ledger check needs."""
    order_key = f"order-1-{run}"
    rush_key = f"order-2-{run}"
    event_id = f"evt_{run}"

    say(bold("1. Create a payment"))
    show_request("POST", "/api/charges/", quoted(order_key), '   {"amount": 4200}')
    first = client.charge(quoted(order_key), 4200)
    show(first, body=True)
    explain("A new key: the view ran once and the fake gateway charged the card.")
    p.check(first.status == 201, "201 Created")
    p.check(first.replayed == "-", "not marked as a replay")
    say()

    say(bold("2. Retry it, as if the response had been lost"))
    show_request("POST", "/api/charges/", quoted(order_key), '   {"amount": 4200}')
    retry = client.charge(quoted(order_key), 4200)
    show(retry)
    explain(
        "The client never saw step 1's answer (a timeout, a dropped connection), so it "
        "sends the same request with the same key. The stored response comes back; "
        "the view and the gateway do not run again."
    )
    p.check(retry.status == 201 and retry.replayed == "true", "201, Idempotent-Replayed: true")
    p.check(retry.body == first.body, "body byte-for-byte identical to step 1")
    say()

    say(bold(f"3. Fire {CONCURRENT} identical requests at the same time"))
    show_request("POST", "/api/charges/", quoted(rush_key), f"   x{CONCURRENT}, all at once")
    barrier = threading.Barrier(CONCURRENT)
    replies: list[Reply | BaseException] = [RuntimeError("no reply")] * CONCURRENT

    def fire(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            replies[i] = client.charge(quoted(rush_key), 1500)
        except BaseException as exc:
            replies[i] = exc

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [r for r in replies if isinstance(r, Reply)]
    errors = [r for r in replies if not isinstance(r, Reply)]
    statuses = sorted({r.status for r in got})
    fresh = [r for r in got if r.replayed == "-"]
    replayed = [r for r in got if r.replayed == "true"]
    workers = {r.served_by for r in got}
    say(
        f"< {bold(' and '.join(str(s) for s in statuses) or 'no answers')}   "
        f"{len(fresh)} ran, {len(replayed)} with Idempotent-Replayed: true   "
        + dim(f"(answered by {len(workers)} worker processes)"),
        3,
    )
    for error in errors[:3]:
        say(f"error: {error!r}", 3)
    explain(
        "One request claimed the key in Redis and ran; the others, in every worker "
        "process, waited for it to finish (woken by Redis, not polling) and replayed "
        "its response."
    )
    p.check(not errors and statuses == [201], f"all {CONCURRENT} answered 201")
    p.check(len(fresh) == 1 and len(replayed) == CONCURRENT - 1, "exactly one ran")
    p.check(len({r.body for r in got}) == 1, "all bodies identical")
    say()

    say(bold("4. Reuse the first key with a different amount"))
    show_request("POST", "/api/charges/", quoted(order_key), '   {"amount": 9900}')
    changed = client.charge(quoted(order_key), 9900)
    show(changed, body=True)
    explain(
        "Same key, different request: a client bug, not a retry. Nothing runs, and "
        "the answer is an RFC 9457 problem document."
    )
    p.check(changed.status == 422, "422, nothing ran")
    p.check(
        changed.headers.get("content-type") == "application/problem+json",
        "Content-Type: application/problem+json",
    )
    say()

    say(bold("5. The payment provider delivers one webhook twice"))
    reference = first.json().get("gateway_reference", "") if first.status == 201 else ""
    event = {"id": event_id, "type": "charge.settled", "data": {"reference": reference}}
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": quoted(event_id),
        "X-Signature": hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    show_request("POST", "/webhooks/payments/", quoted(event_id), "   (event id as the key)")
    deliveries = [client.request("POST", "/webhooks/payments/", body, headers) for _ in range(2)]
    for n, reply in enumerate(deliveries, 1):
        show(reply, f"delivery {n}: ", body=True)
    explain(
        "Providers redeliver until they see a 2xx. The second delivery is answered from "
        "the stored response: the handler ran (and queued the settlement job) once."
    )
    p.check(deliveries[0].status == 202 and deliveries[0].replayed == "-", "first: 202, ran")
    p.check(
        deliveries[1].status == 202
        and deliveries[1].replayed == "true"
        and deliveries[1].body == deliveries[0].body,
        "second: 202, replayed, identical body",
    )
    job = deliveries[0].json().get("job") if deliveries[0].status == 202 else None
    say()

    say(bold("5b. The broker delivers the settlement job's message twice"))
    say(f"celery    settle_event({event_id!r}, ...)  task_id={job}", 3)
    if job:
        redeliver(job, event_id, reference)
    delivered = wait_for_ledger(client, lambda ledger: ledger["job_deliveries"].get(job) == 2)
    say(dim(f"deliveries of {job}: {delivered['job_deliveries'].get(job, 0)}"), 7)
    say(dim(f"runs of the job for {event_id}: {delivered['job_runs'].get(event_id, 0)}"), 7)
    explain(
        "The receiver enqueued the job with task_id=request_key('settle'), an id derived "
        "from the event's key. The same message came again (as after a lost "
        "acknowledgement, or a worker killed under acks_late): IdempotentTask gave the "
        "second delivery the first one's result, and the charge was settled once."
    )
    p.check(delivered["job_deliveries"].get(job) == 2, "the worker handled the message twice")
    p.check(delivered["job_runs"].get(event_id) == 1, "the job's body ran once")
    say()

    say(bold("6. Send a malformed key, then no key"))
    show_request("POST", "/api/charges/", '"unterminated')
    malformed = client.charge('"unterminated', 4200)
    show(malformed, body=True)
    show_request("POST", "/api/charges/", None)
    missing = client.charge(None, 4200)
    show(missing, body=True)
    explain(
        "A key that is not a valid Structured Field string or token is refused before "
        "anything runs; the charges API also requires a key (idempotency_required)."
    )
    p.check(malformed.status == 400, "malformed key: 400")
    p.check(missing.status == 400, "missing key: 400")
    say()

    say(bold("7. Double-click the donation form (a plain Django form, behind the middleware)"))
    form_page = client.request("GET", "/donate/")
    cookie = form_page.headers.get("set-cookie", "").split(";", 1)[0]
    fields = dict(
        re.findall(rb'<input type="hidden" name="([^"]+)" value="([^"]+)"', form_page.body)
    )
    csrf = fields.get(b"csrfmiddlewaretoken", b"").decode()
    # The hidden field {% idempotency_key_field %} rendered: a browser posts it back.
    donation_key = fields.get(b"idempotency_key", b"").decode()
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": csrf,
            "idempotency_key": donation_key,
            "name": "Ada",
            "amount": 500,
        }
    )
    form_headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    show_request("POST", "/donate/", None, f"   idempotency_key={donation_key}&..., twice")
    clicks = [client.request("POST", "/donate/", form.encode(), form_headers) for _ in range(2)]
    for n, reply in enumerate(clicks, 1):
        show(reply, f"click {n}: ")
        say(dim(f"Location: {reply.headers.get('location', '-')}"), 7)
    explain(
        "No JavaScript: the form's template renders {% idempotency_key_field %}, a hidden "
        "field with a new key each time the form is rendered, and the middleware reads it "
        "when there is no Idempotency-Key header. The second click gets the first click's "
        "redirect: one donation, and both land on the same thank-you page."
    )
    p.check(bool(donation_key), "the form page carries a key")
    p.check(clicks[0].status == 302 and clicks[0].replayed == "-", "first click: 302, ran")
    p.check(
        clicks[1].status == 302
        and clicks[1].replayed == "true"
        and clicks[1].headers.get("location") == clicks[0].headers.get("location"),
        "second click: 302 to the same page, replayed",
    )
    say()

    return {
        "gateway_keys": [order_key, rush_key, donation_key],
        "events": [event_id],
    }


def check_schema(client: Client, p: Promises) -> None:
    """Step 8: the OpenAPI schema (drf-spectacular) documents the contract of the charges API."""
    say(bold("8. Read the OpenAPI schema"))
    show_request("GET", "/api/schema/?format=json", None)
    reply = client.request("GET", "/api/schema/?format=json")
    say(f"< {bold(f'{reply.status} {reply.reason}')}", 3)
    paths = reply.json()["paths"] if reply.status == 200 else {}
    create = paths.get("/api/charges/", {}).get("post", {})
    listing = paths.get("/api/charges/", {}).get("get", {})
    key = [x for x in create.get("parameters", []) if x.get("name") == "Idempotency-Key"]
    responses = create.get("responses", {})
    say(dim(f"POST /api/charges/ answers {', '.join(sorted(responses))}"), 7)
    explain(
        "django_idempotency.openapi.SchemaGenerator (one line in SPECTACULAR_SETTINGS) adds "
        "the contract to every operation a door protects, and to no other."
    )
    p.check(
        len(key) == 1 and key[0].get("in") == "header" and key[0].get("required") is True,
        "POST /api/charges/ documents Idempotency-Key (required)",
    )
    p.check(
        all(
            "application/problem+json" in responses.get(c, {}).get("content", {})
            for c in ("400", "409", "422", "503")
        )
        and "Retry-After" in responses.get("409", {}).get("headers", {})
        and "Idempotent-Replayed" in responses.get("201", {}).get("headers", {}),
        "and its 400/409/422/503 problems, Retry-After and Idempotent-Replayed",
    )
    p.check(
        bool(listing)
        and not any(x.get("name") == "Idempotency-Key" for x in listing.get("parameters", [])),
        "GET /api/charges/ (a read) does not",
    )
    say()


def redeliver(task_id: str, event_id: str, reference: str) -> None:
    """Publish the settlement job's message again, as a broker redelivers it."""
    from celery import Celery
    from exampleproject.celery import broker_url

    producer = Celery("demo", broker=broker_url(os.environ["REDIS_URL"]), set_as_current=False)
    try:
        producer.send_task(
            "webhooks.tasks.settle_event", args=(event_id, reference), task_id=task_id
        )
    finally:
        producer.close()


def wait_for_ledger(client: Client, done: Any, timeout: float = 60) -> dict[str, Any]:
    """The ledger once ``done(ledger)`` holds (the worker works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        ledger: dict[str, Any] = client.request("GET", "/ledger/").json()
        if done(ledger) or time.monotonic() > deadline:
            return ledger
        time.sleep(0.1)


def check_ledger(client: Client, expected: dict[str, Any], p: Promises) -> dict[str, Any]:
    ledger: dict[str, Any] = client.request("GET", "/ledger/").json()
    calls: dict[str, int] = ledger["gateway_calls"]
    runs: dict[str, int] = ledger["webhook_runs"]
    say(bold("The fake gateway's calls per idempotency key"))
    for key, n in calls.items():
        say(f"{key:<28} {n}", 3)
    say(bold("The webhook handler's runs per event"))
    for key, n in runs.items():
        say(f"{key:<28} {n}", 3)
    p.check(
        calls == dict.fromkeys(expected["gateway_keys"], 1), "every charge hit the gateway once"
    )
    p.check(runs == dict.fromkeys(expected["events"], 1), "the webhook handler ran once")
    p.check(
        ledger["job_runs"] == dict.fromkeys(expected["events"], 1),
        "the settlement job ran once per event",
    )
    return ledger


def show_metrics(client: Client) -> dict[str, int]:
    """Print (and return) ``django_idempotency_requests_total`` from ``/metrics``."""
    text = client.request("GET", "/metrics").body.decode()
    pattern = r'^django_idempotency_requests_total\{door="(\w+)",outcome="(\w+)"\} (\S+)$'
    counts = {
        f"{door}/{outcome}": int(float(value))
        for door, outcome, value in re.findall(pattern, text, flags=re.M)
    }
    say(bold("GET /metrics: django_idempotency_requests_total, every process summed"))
    for name, n in sorted(counts.items()):
        say(f"{name:<28} {n}", 3)
    return counts


# -- processes ------------------------------------------------------------------------


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"manage.py {' '.join(args)} failed with status {done.returncode}")
    return done.stdout.strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within 20 seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def celery_worker(env: dict[str, str]) -> Iterator[int]:
    """A Celery worker (prefork, 2 processes) for the webhook's jobs; yield its pid."""
    cmd = [
        *(sys.executable, "-m", "celery", "-A", "exampleproject", "worker"),
        *("--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
    proc = subprocess.Popen(cmd, cwd=HERE, env=env)
    try:
        yield proc.pid
    finally:
        _stop(proc)


@contextlib.contextmanager
def gunicorn(env: dict[str, str], workers: int, threads: int) -> Iterator[tuple[int, int]]:
    """Run the example under gunicorn; yield (port, pid). Stopped on every way out."""
    # Bind here and hand gunicorn the socket: no race for a "free" port.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    cmd = [
        *(sys.executable, "-m", "gunicorn"),
        *("-c", str(HERE / "gunicorn.conf.py")),
        *("--bind", f"fd://{listener.fileno()}"),
        *("--workers", str(workers), "--threads", str(threads)),
        *("--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning"),
    ]
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, pass_fds=[listener.fileno()])
    listener.close()
    try:
        _wait_until_serving(proc, port)
        yield port, proc.pid
    finally:
        _stop(proc)


def _wait_until_serving(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with status {proc.returncode}")
        try:
            if Client(port).request("GET", "/", timeout=2).status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("gunicorn did not answer within 60 s")
        time.sleep(0.1)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)  # so the clean-up below runs
    started = time.monotonic()
    run = secrets.token_hex(3)  # unique keys, so runs on a shared REDIS_URL never meet
    p = Promises()

    title = "django-idempotency demo: retries, double-clicks and redeliveries charge once"
    say(bold(title))
    say("=" * len(title))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="idempotency-demo-"))
        redis_pid: int | None = None
        if os.environ.get("REDIS_URL"):
            redis_url = os.environ["REDIS_URL"]
            redis_note = f"{redis_url} (from REDIS_URL)"
        else:
            server = embedded_redis.start()
            stack.callback(embedded_redis.stop)
            redis_url, redis_pid = server.url, server.pid
            version = server.client().info("server")["redis_version"]
            redis_note = (
                f"a private redis-server {version} on a unix socket (set REDIS_URL to use yours)"
            )
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "EXAMPLE_DB_PATH": str(Path(tmp) / "example.sqlite3"),
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "DJANGO_DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "exampleproject.settings",
            "PYTHONUNBUFFERED": "1",
            # prometheus-client's multiprocess mode: every process writes its counts here.
            "PROMETHEUS_MULTIPROC_DIR": str(Path(tmp) / "prometheus"),
        }
        Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
        say(f"Redis     {redis_note}")
        say("Database  SQLite in a temporary directory (migrated now)")
        manage(env, "migrate", "--noinput", "-v", "0")
        token = manage(env, "demo_customer", "alice")
        port, gunicorn_pid = stack.enter_context(gunicorn(env, args.workers, args.threads))
        worker_pid = stack.enter_context(celery_worker(env))
        say(
            f"Server    gunicorn, {args.workers} worker processes x {args.threads} threads, "
            f"http://127.0.0.1:{port}/"
        )
        say("Worker    Celery, prefork, 2 processes (the webhook's background jobs)")
        say("Customer  alice, authenticated with a DRF token (keys are scoped per customer)")
        say()
        client = Client(port, token)
        expected = play(client, run, p)
        check_schema(client, p)
        ledger = check_ledger(client, expected, p)
        metrics = show_metrics(client)

    say()
    elapsed = time.monotonic() - started
    if p.broken:
        say(_paint("1;31", f"{len(p.broken)} of {p.kept + len(p.broken)} promises broken:"))
        for what in p.broken:
            say(f"- {what}", 2)
    else:
        say(_paint("1;32", f"All {p.kept} promises kept") + f" in {elapsed:.1f} s.")
    say("Everything the demo started (gunicorn, the worker, Redis, the database) is gone again.")
    result = {
        "ok": not p.broken,
        "broken": p.broken,
        "gateway_calls": ledger["gateway_calls"],
        "webhook_runs": ledger["webhook_runs"],
        "job_runs": ledger["job_runs"],
        "job_deliveries": ledger["job_deliveries"],
        "metrics": metrics,
        "worker_pid": worker_pid,
        "redis_pid": redis_pid,
        "gunicorn_pid": gunicorn_pid,
    }
    print("demo-result: " + json.dumps(result, sort_keys=True), flush=True)
    return 0 if not p.broken else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nInterrupted: gunicorn and Redis were stopped.", file=sys.stderr)
        sys.exit(130)
