"""The example project: ``make demo`` end to end, and its embedded Redis leaves nothing behind.

Every process here is started in a new session, so "nothing left behind" is checked
as "no process is left in its process group" (gunicorn's workers and the
redis-server child stay in the group that started them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from django_idempotency.testing import RedisServer

from .support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
RESULT_PREFIX = "demo-result: "

pytestmark = [pytest.mark.slow, pytest.mark.no_redis]


def example_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no REDIS_URL (conftest exports one), no test settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(DJANGO_SETTINGS_MODULE="exampleproject.settings", PYTHONUNBUFFERED="1", **extra)
    return env


def group_members(pgid: int) -> list[str]:
    """``pid state name`` of every live (not zombie) process in process group ``pgid``."""
    pids = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    if not pids.split():
        return []
    ps = subprocess.run(
        ["ps", "-o", "pid=,stat=,comm=", "-p", ",".join(pids.split())],
        capture_output=True,
        text=True,
    )
    # An orphan that exited may stay a zombie if init does not reap it: it is not running.
    return [line.strip() for line in ps.stdout.splitlines() if line.split()[1][0] != "Z"]


def redis_servers(members: list[str]) -> list[str]:
    return [m for m in members if m.split()[-1] == "redis-server"]


def assert_group_gone(pgid: int) -> None:
    """Wait (bounded) for init to reap whatever was orphaned, then require an empty group."""
    deadline = time.monotonic() + 15
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = group_members(pgid)
    if left:
        os.killpg(pgid, signal.SIGKILL)  # do not leak them into the rest of the run
    assert left == [], "processes left behind"


def assert_dead(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def run_demo(env: dict[str, str]) -> tuple[int, str, dict[str, Any]]:
    """Run ``demo.py`` with the .venv's python; return (status, output, final JSON line)."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "demo.py")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert_group_gone(proc.pid)
    last = output.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith(RESULT_PREFIX), output
    return proc.returncode, output, json.loads(last[len(RESULT_PREFIX) :])


def assert_once_per_key(result: dict[str, Any]) -> None:
    calls, runs = result["gateway_calls"], result["webhook_runs"]
    assert len(calls) == 3  # the first payment, the concurrent one, the donation form
    assert set(calls.values()) == {1}
    assert len(runs) == 1
    assert set(runs.values()) == {1}
    # The webhook's settlement job: its message handled twice by the worker, its body once.
    assert result["job_runs"] == runs
    assert list(result["job_deliveries"].values()) == [2]
    # /metrics sums every process: the job ran once in the worker, once per key in gunicorn.
    metrics = result["metrics"]
    assert metrics["celery/executed"] == 1
    assert metrics["celery/executed"] + metrics.get("celery/waited", 0) + metrics.get(
        "celery/replayed", 0
    ) == sum(result["job_deliveries"].values())
    assert metrics["drf/executed"] == 2  # the first payment and the concurrent one
    assert metrics["middleware/executed"] == 1  # the donation form


def test_demo_keeps_every_promise_on_its_embedded_redis() -> None:
    status, output, result = run_demo(example_env())

    assert status == 0, output
    assert result["ok"] is True and result["broken"] == [], output
    assert_once_per_key(result)
    assert "private redis-server" in output
    assert_dead(result["redis_pid"])
    assert_dead(result["gunicorn_pid"])
    assert_dead(result["worker_pid"])


def test_demo_uses_the_server_in_redis_url(redis_server: RedisServer, redis_client: Any) -> None:
    status, output, result = run_demo(example_env(REDIS_URL=redis_server.url))

    assert status == 0, output
    assert_once_per_key(result)
    assert result["redis_pid"] is None  # none of its own
    assert "(from REDIS_URL)" in output
    assert redis_client.dbsize() > 0  # the records are in the given server
    assert redis_server.is_running


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_demo_stops_gunicorn_and_redis(how: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "demo.py")],
        env=example_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Server "):  # Redis and gunicorn are both up
                break
        else:
            pytest.fail(f"the demo ended before starting gunicorn (status {proc.wait()})")
        assert len(redis_servers(group_members(proc.pid))) == 1
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground group
        else:
            proc.send_signal(signal.SIGTERM)  # `kill <pid>` of the demo alone
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert_group_gone(proc.pid)


# Run by `manage.py shell -c`: what runserver and every other command get.
EMBEDDED_SCRIPT = """
import json, os, time
from django.conf import settings
from django.core.cache import cache
from exampleproject import embedded_redis

cache.set("ping", "pong")
server = embedded_redis.server()
print("info:", json.dumps({"pid": server.pid, "url": settings.REDIS_URL,
                  "socket": server.unix_socket_path, "pong": cache.get("ping")}), flush=True)
how = os.environ["EXIT_HOW"]
if how == "error":
    raise RuntimeError("the command failed")
if how in ("sigint", "sigterm"):
    time.sleep(120)
"""


def _ctrl_c_reaches_it() -> None:
    """In the child before it runs: SIGINT back to its default disposition.

    A test runner started in the background by a shell without job control ignores
    SIGINT, and an ignored signal stays ignored across exec (Python then installs no
    KeyboardInterrupt handler): the command would never see the Ctrl-C a terminal sends.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", ["normal", "error", "sigint", "sigterm"])
def test_manage_py_embedded_redis_starts_and_is_gone_after_the_command(how: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", EMBEDDED_SCRIPT],
        env=example_env(EXAMPLE_DB_PATH=os.devnull, EXIT_HOW=how),
        cwd=EXAMPLE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_ctrl_c_reaches_it,
    )
    try:
        assert proc.stdout is not None
        info = None
        for line in proc.stdout:  # skip whatever the shell prints first
            if line.startswith("info: "):
                info = json.loads(line[len("info: ") :])
                break
        assert info is not None, proc.communicate()
        assert info["url"].startswith("unix://")
        assert info["pong"] == "pong"
        if how in ("sigint", "sigterm"):
            os.kill(proc.pid, 0)
            # Only the Python process is signalled: it must stop the server itself.
            proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (proc.returncode == 0) == (how == "normal"), stderr
    assert_group_gone(proc.pid)
    assert_dead(info["pid"])
    assert not Path(info["socket"]).exists()


def test_gunicorn_workers_share_one_embedded_redis(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"),
            *("--bind", f"127.0.0.1:{port}", "--workers", "3", "--log-level", "warning"),
        ],
        env=example_env(EXAMPLE_DB_PATH=str(tmp_path / "db.sqlite3")),
        cwd=EXAMPLE,
        start_new_session=True,
    )
    try:
        wait_until_serving(proc, port)
        members = group_members(proc.pid)
        assert len(redis_servers(members)) == 1, members
        proc.terminate()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert_group_gone(proc.pid)


def wait_until_serving(proc: subprocess.Popen[Any], port: int) -> None:
    import http.client

    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"gunicorn exited with {proc.returncode}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        assert time.monotonic() < deadline, "gunicorn did not start"
        time.sleep(0.1)
