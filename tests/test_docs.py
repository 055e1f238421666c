"""The documentation site (docs/): its snippets run against the code, and its build is clean.

Snippets: every Python block of every page compiles; every ``IDEMPOTENCY = {...}`` in a
snippet is validated by the real settings table; the blocks the how-to guides are built
around are executed (settings through the app's checks, ``run()`` against the test Redis,
the ``idempotency_inspect`` sessions against records made for them). Blocks that would
reach a real cluster or Sentinel (private addresses) are compiled and their settings
validated, never connected.

Build: ``sphinx-build -W`` (warnings are errors: a link to a page, a setting or a problem
type that does not exist fails it), then every setting, option, problem type, system
check and command option of the code has its anchor in the built HTML, and every
internal link lands on a page and an id that exist.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import base64
import html
import io
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from django.core.management import call_command
from django.test import override_settings

from django_idempotency import checks, run
from django_idempotency.conf import SETTINGS, build
from django_idempotency.exceptions import IdempotencyError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = {
    path.relative_to(DOCS).as_posix(): path.read_text()
    for path in sorted(DOCS.rglob("*.md"))
    if "_build" not in path.parts
}
FENCE = re.compile(r"^(`{3,})([\w+-]*)[^\n]*\n(.*?)^\1\s*$", flags=re.S | re.M)
TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
#: As ``make docs`` runs it: warnings are errors.
SPHINX = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]


def fenced(page: str | None = None) -> list[tuple[str, str, str]]:
    """(page, language, code) of every fenced block, of one page or of all."""
    found = []
    for name, text in PAGES.items():
        if page is None or name == page:
            found += [(name, lang, code) for _, lang, code in FENCE.findall(text)]
    return found


def block(page: str, lang: str, containing: str) -> str:
    found = [code for _, kind, code in fenced(page) if kind == lang and containing in code]
    assert found, f"docs/{page} has no {lang} block containing {containing!r}"
    return found[0]


def execute(code: str, **namespace: Any) -> dict[str, Any]:
    exec(compile(code, "docs", "exec"), namespace)
    return namespace


@pytest.fixture
def myproject(monkeypatch):
    """``myproject.redis`` and ``myproject.scopes``, which the how-tos' settings name by
    path, made of the how-tos' own blocks."""
    cluster = block("howto/redis.md", "python", "RedisCluster")
    module = types.ModuleType("myproject.redis")
    exec(compile(cluster.split("# settings.py")[0], "docs", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "myproject", types.ModuleType("myproject"))
    monkeypatch.setitem(sys.modules, "myproject.redis", module)
    scopes = types.ModuleType("myproject.scopes")  # the edge how-to's headers scope
    exec(
        compile(block("howto/edge.md", "python", "def api_key_scope"), "docs", "exec"),
        scopes.__dict__,
    )
    monkeypatch.setitem(sys.modules, "myproject.scopes", scopes)
    return module


# -- snippets -----------------------------------------------------------------------------


@pytest.mark.no_redis
@pytest.mark.parametrize(
    "page,code",
    [(page, code) for page, lang, code in fenced() if lang == "python"],
    ids=lambda value: value if value.endswith(".md") else "",
)
def test_every_python_block_compiles(page, code):
    compile(code, f"docs/{page}", "exec", flags=TOP_LEVEL_AWAIT)


def _settings_snippets() -> list[tuple[str, str]]:
    found = []
    for page, lang, code in fenced():
        if lang != "python":
            continue
        tree = compile(code, page, "exec", flags=ast.PyCF_ONLY_AST | TOP_LEVEL_AWAIT)
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "IDEMPOTENCY" for t in node.targets
            ):
                found.append((page, ast.unparse(node.value)))
    return found


@pytest.mark.no_redis
def test_the_docs_show_settings():
    assert len(_settings_snippets()) >= 5


@pytest.mark.no_redis
@pytest.mark.parametrize("page,value", _settings_snippets(), ids=lambda v: v[:40])
def test_every_settings_snippet_is_valid_for_the_settings_table(page, value, myproject):
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    environ = {**os.environ, "IDEMPOTENCY_ENCRYPTION_KEY": key}
    settings = eval(value, {"os": types.SimpleNamespace(environ=environ)})
    build(settings)  # raises ImproperlyConfigured naming any key the table does not accept


@pytest.mark.no_redis
def test_tutorial_settings_pass_the_apps_checks():
    ns = execute(block("tutorial.md", "python", "INSTALLED_APPS"))
    assert "django_idempotency" in ns["INSTALLED_APPS"]
    build(ns["IDEMPOTENCY"])
    middleware = [m for m in ns["MIDDLEWARE"] if m is not Ellipsis]
    with override_settings(
        CACHES=ns["CACHES"], IDEMPOTENCY=ns["IDEMPOTENCY"], MIDDLEWARE=middleware
    ):
        assert checks.check_redis() == []
        assert checks.check_middleware_order() == []


@pytest.mark.no_redis
def test_middleware_guide_block_passes_the_order_check():
    ns = execute(block("howto/middleware.md", "python", "MIDDLEWARE"))
    middleware = [m for m in ns["MIDDLEWARE"] if m is not Ellipsis]
    with override_settings(MIDDLEWARE=middleware):
        assert checks.check_middleware_order() == []


@pytest.mark.no_redis
def test_decorator_guide_blocks_build_guarded_views():
    ns = execute(block("howto/decorator.md", "python", "@idempotent_view(required"))
    assert getattr(ns["webhook"], "idempotency_door", False)
    bare = execute(block("howto/decorator.md", "python", "def pay"), **ns)
    assert getattr(bare["pay"], "idempotency_door", False)
    cbv = execute(block("howto/decorator.md", "python", "method_decorator"), **ns)
    assert getattr(cbv["PayView"].dispatch, "idempotency_door", False)


@pytest.mark.no_redis
def test_drf_guide_block_builds_a_guarded_viewset():
    ns = execute(block("howto/drf.md", "python", "IdempotentMixin"))
    viewset = ns["ChargeViewSet"]
    assert viewset.idempotency_actions == {"create"} and viewset.idempotency_required


def test_run_guide_block_charges_once_across_sync_and_async_calls():
    code = block("howto/run.md", "python", "receipt = run(")
    charges: list[int] = []

    class Gateway:
        def charge(self, order: Any) -> dict[str, int]:
            charges.append(order.pk)
            return {"order": order.pk}

    class AsyncGateway:
        async def charge(self, order: Any) -> dict[str, int]:
            return Gateway().charge(order)

    namespace = {
        "order": types.SimpleNamespace(pk=1042),
        "gateway": Gateway(),
        "agateway": AsyncGateway(),
    }
    result = eval(compile(code, "docs", "exec", flags=TOP_LEVEL_AWAIT), namespace)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    assert namespace["receipt"] == {"order": 1042}
    assert charges == [1042]  # the second call (async) replayed the first


@pytest.mark.no_redis
def test_cluster_and_sentinel_factories_are_valid_settings(myproject):
    cluster = block("howto/redis.md", "python", "RedisCluster")
    settings_ns = execute(cluster.split("# settings.py")[1])
    # The factory resolves; it is not called (its address is an example).
    assert build(settings_ns["IDEMPOTENCY"]).REDIS is myproject.idempotency_redis
    sentinel = execute(block("howto/redis.md", "python", "master_for"))
    assert callable(sentinel["idempotency_redis"])
    caches = execute(block("howto/redis.md", "python", "SentinelClient"))
    with override_settings(CACHES=caches["CACHES"], IDEMPOTENCY=caches["IDEMPOTENCY"]):
        assert checks.check_redis() == []


def _inspect_commands() -> list[list[str]]:
    commands = []
    for _, lang, code in fenced("howto/operating.md"):
        if lang != "console":
            continue
        for line in code.splitlines():
            if line.startswith("$ ./manage.py idempotency_inspect"):
                argv = shlex.split(line[2:].split("|")[0])
                commands.append(argv[2:])
    assert commands, "the operating guide shows no idempotency_inspect session"
    return commands


@pytest.mark.django_db
@pytest.mark.parametrize("argv", _inspect_commands(), ids=" ".join)
def test_inspect_examples_run(argv, client, monkeypatch):
    # Records like the guide's: an HTTP key of user 42 and a run() key.
    from django.contrib.auth.models import User

    user = User.objects.create_user("u42", id=42)
    client.force_login(user)
    client.post(
        "/middleware/",
        data="{}",
        content_type="application/json",
        headers={"Idempotency-Key": "8e03978e-40d5-43e8-bc93-6894a57f9324"},
    )
    run("charge:1042", lambda: {"id": "ch_1042"})
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    monkeypatch.setattr("builtins.input", lambda prompt="": "yes")
    out, err = io.StringIO(), io.StringIO()
    call_command("idempotency_inspect", *argv, stdout=out, stderr=err)
    assert "Traceback" not in out.getvalue() + err.getvalue()


def _problem_classes() -> list[type[IdempotencyError]]:
    """``IdempotencyError`` and every subclass: one problem type per ``type_slug``."""

    def subclasses(cls: type[IdempotencyError]) -> list[type[IdempotencyError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in subclasses(sub))]

    return subclasses(IdempotencyError)


def _problem_documents() -> list[tuple[str, str]]:
    found = []
    for page, lang, code in fenced():
        if lang == "console":
            found += [(page, line) for line in code.splitlines() if line.startswith('{"type": ')]
    return found


@pytest.mark.no_redis
@pytest.mark.parametrize("page,line", _problem_documents())
def test_problem_documents_shown_are_the_ones_the_code_sends(page, line):
    import json

    from django_idempotency.conf import get_settings
    from django_idempotency.http import problem_document

    shown = json.loads(line)
    slug = shown["type"].rsplit("#", 1)[1]
    (cls,) = {c for c in _problem_classes() if c.type_slug == slug}
    sent = problem_document(cls(), get_settings().PROBLEM_TYPE_BASE)
    assert {k: sent[k] for k in ("type", "title", "status")} == {
        k: shown[k] for k in ("type", "title", "status")
    }


# -- the built site -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built as ``make docs`` builds it: warnings are errors."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [*SPHINX, "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def ids(page: Path) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', page.read_text()))


@pytest.mark.slow
@pytest.mark.no_redis
def test_every_setting_has_its_anchor(site):
    found = ids(site / "reference" / "settings.html")
    assert {f.name for f in SETTINGS} <= found


@pytest.mark.slow
@pytest.mark.no_redis
def test_every_problem_type_has_the_anchor_its_type_uri_points_to(site):
    slugs = {cls.type_slug for cls in _problem_classes()}
    assert {"invalid-key", "in-progress", "record-integrity"} <= slugs
    assert slugs <= ids(site / "reference" / "problems.html")


@pytest.mark.no_redis
def test_every_metric_and_span_attribute_the_observers_emit_is_listed():
    source = "\n".join(
        p.read_text() for p in (ROOT / "django_idempotency" / "observers").glob("*.py")
    )
    names = set(re.findall(r'"((?:django_)?idempotency[._][a-z_.]+)"', source))
    names.discard("django_idempotency.otel.key")  # the key hash's HMAC salt, never seen
    assert {"django_idempotency_requests", "idempotency.key_hash"} <= names
    page = PAGES["reference/observability.md"]
    assert sorted(n for n in names if n not in page) == []


#: Problem types no HTTP client is sent: the base class, and what only run() raises.
NOT_ANSWERED = {"error", "replayed-error", "result-not-stored"}


@pytest.mark.no_redis
def test_every_problem_type_a_client_can_get_is_on_the_status_codes_page():
    page = PAGES["reference/status-codes.md"]
    listed = set(re.findall(r"\{problem\}`([a-z-]+)`", page))
    assert {cls.type_slug for cls in _problem_classes()} - NOT_ANSWERED <= listed


@pytest.mark.slow
@pytest.mark.no_redis
def test_every_option_has_its_anchor(site):
    from django_idempotency.options import SPECS

    assert set(SPECS) <= ids(site / "reference" / "options.html")


@pytest.mark.slow
@pytest.mark.no_redis
def test_every_system_check_id_has_its_anchor(site):
    source = "\n".join(p.read_text() for p in (ROOT / "django_idempotency").rglob("*.py"))
    raised = set(re.findall(r'"django_idempotency\.([EW]\d{3})"', source))
    from django_idempotency.conf import check_id

    raised |= {check_id(f.name).rsplit(".", 1)[1] for f in SETTINGS}
    assert {"E100", "E002", "W001"} <= raised
    assert raised <= ids(site / "reference" / "checks.html")


@pytest.mark.slow
@pytest.mark.no_redis
def test_every_command_option_is_documented(site):
    from django.core.management import load_command_class

    command = load_command_class("django_idempotency", "idempotency_inspect")
    parser = command.create_parser("manage.py", "idempotency_inspect")
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    page = html.unescape((site / "reference" / "commands.html").read_text())
    for name, sub in subparsers.choices.items():
        assert f"idempotency_inspect-{name}" in ids(site / "reference" / "commands.html")
        for action in sub._actions:
            for option in action.option_strings:
                if option not in {"-h", "--help", "-v", "--verbosity", "--settings"}:
                    assert option in page, (name, option)


@pytest.mark.slow
@pytest.mark.no_redis
def test_every_internal_link_lands_on_a_page_and_an_id(site):
    broken = []
    for page in site.rglob("*.html"):
        if page.parent.name.startswith("_"):
            continue
        for href in re.findall(r'\shref="([^"]+)"', page.read_text()):
            parts = urlsplit(html.unescape(href))
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists() or (
                parts.fragment
                and target.suffix == ".html"
                and unquote(parts.fragment) not in ids(target)
            ):
                broken.append(f"{page.relative_to(site)}: {href}")
    assert not broken, broken


@pytest.mark.slow
@pytest.mark.no_redis
def test_install_quickstart_and_settings_are_two_clicks_from_the_first_page(site):
    front = (site / "index.html").read_text()
    main = front.split('id="furo-main-content"', 1)[1]
    linked = set(re.findall(r'href="([^"#]+)', main))
    assert {"tutorial.html", "reference/settings.html"} <= linked


@pytest.mark.slow
@pytest.mark.no_redis
def test_settings_page_lists_the_settings_in_the_order_of_their_check_ids(site):
    from django_idempotency.conf import check_id

    page = (site / "reference" / "settings.html").read_text()
    names = [f.name for f in SETTINGS]
    sections = [m for m in re.findall(r'<section id="([^"]+)"', page) if m in names]
    assert sections == names
    # As the page says: E101 for the first setting, one more for each after it.
    assert [check_id(name) for name in names] == [
        f"django_idempotency.E{101 + i}" for i in range(len(names))
    ]


DOCS_URL = "https://django-idempotency.readthedocs.io/en/latest/"


@pytest.mark.slow
@pytest.mark.no_redis
def test_the_readmes_links_into_the_docs_land_on_a_page_and_an_id(site):
    readme = (ROOT / "README.md").read_text()
    links = re.findall(re.escape(DOCS_URL) + r"([^)\s>\"'*]*)", readme)
    assert len(links) >= 5, "the README links into the docs"
    for link in links:
        parts = urlsplit(link)
        target = site / (parts.path or "index.html")
        assert target.exists(), link
        if parts.fragment:
            assert parts.fragment in ids(target), link
