"""The README's parts as its tests read them: sections, code blocks and curl sessions."""

from __future__ import annotations

import http.client
import re
import shlex
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(name: str) -> str:
    """The README text from ``<!-- section: name -->`` to the next section marker."""
    match = re.search(rf"<!-- section: {name} -->\n(.*?)(?=<!-- section:|\Z)", README, re.S)
    assert match, f"README has no section {name!r}"
    return match.group(1)


def code_blocks(text: str, lang: str) -> list[str]:
    """The fenced ``lang`` blocks of ``text``."""
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


#: One ``$ curl`` call: method, path, headers, and the response lines shown under it.
Call = tuple[str, str, dict[str, str], list[str]]


def curl_session(text: str) -> list[Call]:
    """Each ``$ curl -X METHOD URL -H 'Name: value'`` of ``text``'s console blocks."""
    calls: list[Call] = []
    for block in code_blocks(text, "console"):
        for line in block.splitlines():
            if not line.startswith("$ curl"):
                if calls:
                    calls[-1][3].append(line)
                continue
            argv = iter(shlex.split(line[2:]))
            method, path, headers = "GET", "/", {}
            for arg in argv:
                if arg == "-X":
                    method = next(argv)
                elif arg == "-H":
                    name, value = next(argv).split(":", 1)
                    headers[name.strip()] = value.strip()
                elif arg.startswith("http"):
                    path = "/" + arg.split("://", 1)[1].split("/", 1)[1]
            calls.append((method, path, headers, []))
    return calls


def charge_view() -> str:
    """The view of the README's 30-second example (routed at ``charge/``), as a module."""
    (view,) = [b for b in code_blocks(section("doors"), "python") if "def charge" in b]
    return view


def send(
    port: int, method: str, path: str, headers: dict[str, str]
) -> tuple[int, bytes, str | None]:
    """One request to a local server: status, body and the ``Idempotent-Replayed`` header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Idempotent-Replayed")
    finally:
        conn.close()


def post(port: int, key: str) -> tuple[int, bytes, str | None]:
    """A POST to the example's ``/charge/`` with ``key``."""
    return send(port, "POST", "/charge/", {"Idempotency-Key": key})
