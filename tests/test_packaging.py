"""The built wheel carries the Lua scripts and py.typed, and imports without settings."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.no_redis


def test_wheel_contains_scripts_and_type_marker(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("django_idempotency-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in ("claim", "complete", "release", "renew"):
        assert f"django_idempotency/stores/redis/lua/{script}.lua" in names
    assert "django_idempotency/py.typed" in names


def test_public_api_imports_without_django_settings():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "from django_idempotency import run, arun, idempotent_view, IdempotencyError"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd="/")
