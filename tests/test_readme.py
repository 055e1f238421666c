"""Every code block in README.md is exercised here, or by the demo (make demo/test).

Python blocks are compiled, and executed where they can run here (settings are
validated through the app's own checks, `run()` runs against the test Redis).
Console blocks of `idempotency_inspect` are run against records made for them.
Blocks that would reach a real cluster or Sentinel (private addresses) are
compiled and their settings validated, never connected.
"""

from __future__ import annotations

import ast
import asyncio
import io
import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from django_idempotency import checks, run
from django_idempotency.conf import build

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)


def blocks(lang: str, containing: str = "") -> list[str]:
    found = [code for kind, code in BLOCKS if kind == lang and containing in code]
    assert found, f"README has no {lang} block containing {containing!r}"
    return found


def execute(code: str, **namespace: Any) -> dict[str, Any]:
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_every_block_is_of_a_kind_this_module_covers():
    assert {kind for kind, _ in BLOCKS} <= {"python", "sh", "console"}


@pytest.mark.no_redis
def test_every_python_block_compiles():
    for code in blocks("python"):
        compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.no_redis
def test_install_settings_are_valid():
    ns = execute(blocks("python", "INSTALLED_APPS")[0])
    assert "django_idempotency" in ns["INSTALLED_APPS"]
    build(ns["IDEMPOTENCY"])
    with override_settings(CACHES=ns["CACHES"], IDEMPOTENCY=ns["IDEMPOTENCY"]):
        assert checks.check_redis() == []


@pytest.mark.no_redis
def test_middleware_block_passes_the_order_check():
    ns = execute(blocks("python", "MIDDLEWARE")[0])
    middleware = [m for m in ns["MIDDLEWARE"] if m is not Ellipsis]
    with override_settings(MIDDLEWARE=middleware):
        assert checks.check_middleware_order() == []


@pytest.mark.no_redis
def test_decorator_block_builds_a_guarded_view():
    ns = execute(blocks("python", "@idempotent_view")[0])
    assert getattr(ns["webhook"], "idempotency_door", False)


@pytest.mark.no_redis
def test_drf_block_builds_a_guarded_viewset():
    from rest_framework import viewsets

    ns = execute(blocks("python", "IdempotentMixin")[0], viewsets=viewsets)
    viewset = ns["ChargeViewSet"]
    assert viewset.idempotency_actions == {"create"} and viewset.idempotency_required


def test_run_block_charges_once_across_sync_and_async_calls():
    code = blocks("python", "receipt = run(")[0]
    charges: list[int] = []

    class Gateway:
        def charge(self, order: Any) -> dict[str, int]:
            charges.append(order.pk)
            return {"order": order.pk}

    class AsyncGateway:
        async def charge(self, order: Any) -> dict[str, int]:
            return Gateway().charge(order)

    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    namespace = {
        "order": types.SimpleNamespace(pk=1042),
        "gateway": Gateway(),
        "agateway": AsyncGateway(),
    }
    result = eval(compile(code, "README.md", "exec", flags=flags), namespace)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    assert namespace["receipt"] == {"order": 1042}
    assert charges == [1042]  # the second call (async) replayed the first


@pytest.mark.no_redis
def test_cluster_and_sentinel_factories_are_valid_settings(monkeypatch):
    cluster = blocks("python", "RedisCluster")[0]
    module = types.ModuleType("myproject.redis")
    exec(compile(cluster.split("# settings.py")[0], "README.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "myproject", types.ModuleType("myproject"))
    monkeypatch.setitem(sys.modules, "myproject.redis", module)
    settings_ns = execute(cluster.split("# settings.py")[1])
    # The factory resolves; it is not called (its address is an example).
    assert build(settings_ns["IDEMPOTENCY"]).REDIS is module.idempotency_redis
    sentinel = execute(blocks("python", "master_for")[0])
    assert callable(sentinel["idempotency_redis"])
    caches = execute(blocks("python", "SentinelClient")[0])
    with override_settings(CACHES=caches["CACHES"], IDEMPOTENCY=caches["IDEMPOTENCY"]):
        assert checks.check_redis() == []


def _inspect_commands() -> list[list[str]]:
    commands = []
    for code in blocks("console", "idempotency_inspect"):
        for line in code.splitlines():
            if line.startswith("$ ./manage.py idempotency_inspect"):
                argv = shlex.split(line[2:].split("|")[0])
                commands.append(argv[2:])
    return commands


@pytest.mark.django_db
@pytest.mark.parametrize("argv", _inspect_commands(), ids=" ".join)
def test_inspect_examples_run(argv, client, monkeypatch):
    # Records like the README's: an HTTP key of user 42 and a run() key.
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


def test_settings_table_lists_every_setting_in_the_order_of_its_check_ids():
    from django_idempotency.conf import SETTINGS, check_id

    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.M)
    assert rows == [f.name for f in SETTINGS]
    # As the README says: E101 for the first row, one more for each row after it.
    assert [check_id(name) for name in rows] == [
        f"django_idempotency.E{101 + i}" for i in range(len(rows))
    ]
