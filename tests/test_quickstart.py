"""A new user's first hour, from the built wheel: outside this repository, in a fresh
virtualenv, a ``django-admin startproject`` project set up by the README's Install and
"In 30 seconds" sections (settings, middleware and the view), served by ``runserver``,
answers the README's two curl calls as the README shows: the second is the first
response replayed, so the view ran once.

The README is followed word for word, with four readings a person makes without
thinking: ``pip install django-idempotency`` installs the wheel just built; ``[..., x]``
in a settings list means "the list you already have, plus x"; "route it at
``charge/``" is one line in ``urls.py``; and the Redis URL is the throwaway server's.
Nothing else is added to the generated settings.
"""

from __future__ import annotations

import ast
import http.client
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from django_idempotency.testing import RedisServer

from .support.readme import charge_view, code_blocks, curl_session, section, send
from .support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.no_redis]


def as_settings_edit(block: str) -> str:
    """``NAME = [..., a, b]`` becomes "NAME, plus a and b where missing"; the rest stays."""
    tree = ast.parse(block)
    for node in tree.body:
        value = getattr(node, "value", None)
        if (
            isinstance(node, ast.Assign)
            and isinstance(value, ast.List)
            and value.elts
            and isinstance(value.elts[0], ast.Constant)
            and value.elts[0].value is Ellipsis
        ):
            (target,) = node.targets
            assert isinstance(target, ast.Name)
            added = ast.unparse(ast.List(elts=value.elts[1:], ctx=ast.Load()))
            node.value = ast.parse(
                f"{target.id} + [x for x in {added} if x not in {target.id}]", mode="eval"
            ).body
    return ast.unparse(tree)


def wait_until_serving(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[0].decode(errors="replace")
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("runserver did not start listening within 60 s")


def test_the_readme_quickstart_protects_a_fresh_project_from_the_built_wheel(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("django_idempotency-*.whl")
    # The newcomer's shell knows nothing of this suite's settings or paths.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV"}
    }

    # A virtualenv of its own, and a project directory far from this repository.
    home = tmp_path / "newcomer"
    home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    bin_ = home / "venv" / "bin"

    install = section("install")
    (pip_line,) = [
        line
        for block in code_blocks(install, "sh")
        for line in block.splitlines()
        if line.startswith("pip install")
    ]
    argv = shlex.split(pip_line, comments=True)
    assert argv[:3] == ["pip", "install", "django-idempotency"], pip_line
    subprocess.run(
        [str(bin_ / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        cwd=home,
        env=env,
    )
    subprocess.run(
        [str(bin_ / "django-admin"), "startproject", "mysite"], check=True, cwd=home, env=env
    )
    project = home / "mysite"

    with RedisServer() as redis:
        (settings_block,) = [b for b in code_blocks(install, "python") if "INSTALLED_APPS" in b]
        assert "redis://127.0.0.1:6379/0" in settings_block
        settings_block = settings_block.replace("redis://127.0.0.1:6379/0", redis.url)
        doors = section("doors")
        (middleware_block,) = [b for b in code_blocks(doors, "python") if "MIDDLEWARE" in b]
        assert "Route it at `charge/`" in doors
        settings = project / "mysite" / "settings.py"
        settings.write_text(
            settings.read_text()
            + "\n# From the README's Install section\n"
            + as_settings_edit(settings_block)
            + "\n# From the README's Quickstart (middleware)\n"
            + as_settings_edit(middleware_block)
            + "\n"
        )
        (project / "mysite" / "views.py").write_text(charge_view())
        urls = project / "mysite" / "urls.py"
        urls.write_text(
            urls.read_text()
            + "\nfrom . import views  # noqa: E402\n\n"
            + 'urlpatterns += [path("charge/", views.charge)]\n'
        )

        python = str(bin_ / "python")
        # The system checks (including the middleware-order check) pass as configured.
        subprocess.run([python, "manage.py", "check"], check=True, cwd=project, env=env)
        subprocess.run([python, "manage.py", "migrate", "-v0"], check=True, cwd=project, env=env)

        port = free_port()
        server = subprocess.Popen(
            [python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(port, server)
            first_call, second_call = curl_session(doors)
            assert first_call[:3] == second_call[:3], "the README sends the same request twice"
            first = send(port, *first_call[:3])
            second = send(port, *second_call[:3])
        finally:
            server.terminate()
            server.wait(timeout=30)

    assert first[0] == 201, first
    assert first[2] is None
    # The view makes a new id each time it runs: the same body is the one run, replayed.
    assert second == (201, first[1], "true")
