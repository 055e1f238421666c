"""``idempotency-conformance URL``: the promises battery against a live endpoint over HTTP.

The standard library's ``http.client`` only, a connection per request, redirects
reported and never followed. Exits 0 when nothing failed, 1 when a promise is broken,
2 on a usage error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from .testing import promises
from .testing.promises import Battery, Reply, Request, Sender, Transport, Verdict, render


def http_transport(url: str, timeout: float) -> Transport:
    """A transport sending each request to ``url`` on a connection of its own."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname or ""
    port = parts.port

    def open_sender() -> Sender:
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            context = ssl.create_default_context()
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()  # before the caller's barrier: duplicates then leave together
        except OSError as exc:
            conn.close()
            error = f"{type(exc).__name__}: {exc}"
            return lambda request: Reply(0, error=error)

        def send(request: Request) -> Reply:
            try:
                conn.request(request.method, target, body=request.body, headers=request.headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                return Reply(0, error=f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()
            headers: dict[str, str] = {}
            for name, value in response.getheaders():
                name = name.lower()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            return Reply(response.status, headers, body)

        return send

    return open_sender


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line and the battery it asks for (``args.battery``); bad usage exits 2."""
    most = promises.MAX_CONCURRENCY
    parser = argparse.ArgumentParser(
        prog="idempotency-conformance",
        description=(
            "Check that URL keeps the Idempotency-Key promises: a retry replays the first "
            "response, a changed body gets 422, a malformed key 400, concurrent "
            "duplicates run once. The first request of each check runs for real."
        ),
    )
    parser.add_argument("url", metavar="URL", help="the endpoint (http:// or https://)")
    parser.add_argument("--method", default="POST", help="HTTP method (default: POST)")
    parser.add_argument("--data", help="request body, JSON (sent as application/json)")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header sent with every request (repeatable), e.g. 'Authorization: Token ...'",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=20,
        help=f"concurrent duplicates to send, 1-{most} (default: 20; 1 skips them)",
    )
    parser.add_argument(
        "--conflict",
        choices=promises.CONFLICT_MODES,
        default="wait",
        help="what duplicates arriving while the first runs should get: its response "
        "(wait, the default) or 409 (reject)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default: 30)"
    )
    parser.add_argument("--key-header", default="Idempotency-Key", help="the key's header")
    parser.add_argument(
        "--replay-header", default="Idempotent-Replayed", help="the header marking a replay"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        parser.error(f"URL must be an http:// or https:// URL, got {args.url!r}")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        parser.error(f"URL has a bad port: {exc}")
    if args.data is not None:
        try:
            json.loads(args.data)
        except ValueError as exc:
            parser.error(f"--data must be JSON: {exc}")
    headers: dict[str, str] = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip() or any(c in raw for c in "\r\n"):
            parser.error(f"--header must look like 'Name: value', got {raw!r}")
        headers[name.strip()] = value.strip()
    if not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    try:  # the battery refuses a bad --concurrency or --method, naming the option
        args.battery = Battery(
            method=args.method,
            body=(args.data or "").encode(),
            headers=headers,
            key_header=args.key_header,
            replay_header=args.replay_header,
            concurrency=args.concurrency,
            conflict=args.conflict,
            barrier_timeout=args.timeout,
        )
    except ValueError as exc:
        parser.error(f"--{exc}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: print the report; 0 if nothing failed, 1 if a promise broke."""
    args = parse_args(argv)
    results = args.battery.run(http_transport(args.url, args.timeout))
    failed = any(r.failed for r in results)
    if args.json:
        report = {
            "url": args.url,
            "method": args.method.upper(),
            "passed": not failed,
            "promises": [r.as_dict() for r in results],
        }
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.method.upper()} {args.url}")
        print(render(results))
        passed = sum(r.verdict is Verdict.PASS for r in results)
        print(f"{passed} passed, {sum(r.failed for r in results)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
