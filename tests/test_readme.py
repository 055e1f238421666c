"""Every code block in README.md is exercised here, by the quickstart or by the demo.

The README is the front page: what the app does, install, a 30-second example and links
into the docs (whose own snippets tests/test_docs.py runs, and whose build checks that the
README's links land). Python blocks are compiled, and executed where they can run here:
settings go through the app's own checks, the example's view is served behind the
middleware, and its two curl calls are sent as written, each answer compared with the
response the README shows under it. tests/test_quickstart.py follows the same blocks in a
fresh project from the built wheel; `make demo` is the example the last section names.
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.urls import path

import django_idempotency
from django_idempotency import checks
from django_idempotency.conf import build

from .support.readme import README, code_blocks, curl_session, section

BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)


def blocks(lang: str, containing: str = "") -> list[str]:
    found = [code for kind, code in BLOCKS if kind == lang and containing in code]
    assert found, f"README has no {lang} block containing {containing!r}"
    return found


def test_the_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= 200


def test_every_block_is_of_a_kind_this_module_covers():
    assert {kind for kind, _ in BLOCKS} <= {"python", "sh", "console"}


@pytest.mark.no_redis
def test_every_python_block_compiles():
    for code in blocks("python"):
        compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.no_redis
def test_install_settings_and_middleware_pass_the_apps_checks():
    ns: dict[str, Any] = {}
    exec(blocks("python", "INSTALLED_APPS")[0], ns)
    assert "django_idempotency" in ns["INSTALLED_APPS"]
    build(ns["IDEMPOTENCY"])
    exec(blocks("python", "MIDDLEWARE")[0], ns)
    middleware = [m for m in ns["MIDDLEWARE"] if m is not Ellipsis]
    with override_settings(
        CACHES=ns["CACHES"], IDEMPOTENCY=ns["IDEMPOTENCY"], MIDDLEWARE=middleware
    ):
        assert checks.check_redis() == []
        assert checks.check_middleware_order() == []


def test_the_30_second_example_answers_as_the_readme_shows(client):
    doors = section("doors")
    (view_block,) = [b for b in code_blocks(doors, "python") if "def charge" in b]
    views = types.ModuleType("readme_views")
    exec(compile(view_block, "README.md", "exec"), views.__dict__)
    urls = types.ModuleType("readme_urls")
    urls.urlpatterns = [path("charge/", views.charge)]  # type: ignore[attr-defined]
    assert "Route it at `charge/`" in doors

    calls = curl_session(doors)
    assert len(calls) == 2 and calls[0][:3] == calls[1][:3], "the same request, twice"
    bodies = []
    with override_settings(ROOT_URLCONF=urls):
        for method, route, headers, shown in calls:
            response = client.generic(method, route, headers=headers)
            assert response.status_code == int(shown[0].split()[1]), shown
            head = shown[: shown.index("")]  # the status line and headers, then the body
            shown_headers = dict(line.split(": ", 1) for line in head[1:])
            for name, value in shown_headers.items():
                assert response.headers.get(name) == value, (name, shown)
            assert ("Idempotent-Replayed" in shown_headers) == (
                "Idempotent-Replayed" in response.headers
            )
            bodies.append(response.content)
    # The view makes a new id each time it runs: the same body twice is one run, replayed.
    assert bodies[0] == bodies[1]
    assert calls[0][3][-1] == calls[1][3][-1], "the README shows the same body twice"


def test_the_development_section_names_the_two_project_commands():
    development = README.split("## Development", 1)[1]
    (commands,) = code_blocks(development, "sh")
    assert [line.split()[:2] for line in commands.splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]


@pytest.mark.no_redis
def test_the_module_map_names_every_module_and_package():
    built = README.split("## How it is built", 1)[1].split("\n## ", 1)[0]
    (module_map,) = re.findall(r"^```\n(.*?)^```", built, flags=re.S | re.M)
    # The left column of each line names modules; the right one says what they hold.
    left = [re.split(r"\s{2,}", line.strip())[0] for line in module_map.splitlines()[1:]]
    named = {name for names in left for name in re.findall(r"[a-z_]+(?:\.py|/)", names)}
    package = Path(django_idempotency.__file__).parent
    present = {
        entry.name + ("/" if entry.is_dir() else "")
        for entry in package.iterdir()
        if (entry.suffix == ".py" or entry.is_dir())
        and entry.name not in {"__init__.py", "__pycache__", "migrations"}
    }
    assert present, "the package has modules"
    assert present <= named, f"not in the README's module map: {sorted(present - named)}"
    assert named <= present, f"the map names modules that are gone: {sorted(named - present)}"
