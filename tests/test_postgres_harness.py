"""The PostgreSQL harness (tests/support/postgres.py) against the real server.

Durable mode is tested on SQLite and on PostgreSQL; these prove the PostgreSQL side runs:
the ``postgres`` fixture's server takes SQL over TCP and its unix socket, Django (in a
process of its own, as the servers the suite starts are) migrates the app onto it and
reads and writes its tables, and a stopped server leaves neither a process nor a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from django.db.utils import ConnectionHandler

from .support.postgres import PostgresServer
from .support.servers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.no_redis]


def django(env: dict[str, str], *args: str) -> str:
    """Run ``python -m django *args`` under ``env``; its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def pg_env(postgres: PostgresServer, database: str) -> dict[str, str]:
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.support.pg_settings",
        PYTHONPATH=str(ROOT),
        **postgres.environ(database),
    )


def test_the_server_runs_sql_over_tcp_as_the_fixture_says(postgres):
    with postgres.connect() as conn:
        conn.execute("CREATE TEMPORARY TABLE t (n integer)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
        row = conn.execute(
            "SELECT sum(n), current_user, current_database(), inet_server_port() FROM t"
        ).fetchone()
        assert row == (15, postgres.user, postgres.dbname, postgres.port)
        assert conn.info.host == postgres.host == "127.0.0.1"


def test_the_server_listens_on_a_unix_socket_in_its_own_directory(postgres):
    conninfo = f"host={postgres.socket_dir} port={postgres.port} user={postgres.user}"
    with psycopg.connect(conninfo, dbname=postgres.dbname) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)


def test_django_database_is_a_databases_entry_django_connects_with(
    postgres, postgres_database, django_db_blocker
):
    connections = ConnectionHandler({"default": postgres.django_database(postgres_database)})
    connection = connections["default"]
    # pytest-django blocks every connection outside django_db tests, these too; this one is
    # not the suite's database, so none of its test-database set-up applies.
    with django_db_blocker.unblock():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_database()")
                assert cursor.fetchone() == (postgres_database,)
            assert connection.vendor == "postgresql"
        finally:
            connections.close_all()


# Run by `manage.py shell` on PostgreSQL: ORM writes, then counts of real tables.
COUNT = """
import json
from django.contrib.auth.models import Permission
from django.db import connection
from tests.support.models import Execution
Execution.objects.bulk_create(Execution(key=f"key-{i}") for i in range(3))
print(json.dumps({
    "vendor": connection.vendor,
    "executions": Execution.objects.count(),
    "permissions": sorted(
        Permission.objects.filter(content_type__app_label="django_idempotency")
        .values_list("codename", flat=True)
    ),
}))
"""


def test_a_django_process_migrates_the_apps_onto_it_and_counts_rows(postgres, postgres_database):
    env = pg_env(postgres, postgres_database)
    django(env, "migrate", "--noinput", "-v", "0")

    answer: dict[str, Any] = json.loads(django(env, "shell", "-c", COUNT).splitlines()[-1])

    assert answer == {
        "vendor": "postgresql",
        "executions": 3,
        "permissions": [
            "delete_durablerecord",
            "delete_idempotencykey",
            "view_durablerecord",
            "view_idempotencykey",
        ],
    }
    # What the Django process wrote is in the server, as another client sees it.
    with postgres.connect(postgres_database) as conn:
        assert conn.execute("SELECT count(*) FROM tests_execution").fetchone() == (3,)
        applied = conn.execute(
            "SELECT count(*) FROM django_migrations WHERE app IN ('django_idempotency', 'tests')"
        ).fetchone()
        on_disk = [
            *(ROOT / "django_idempotency" / "migrations").glob("0*.py"),
            *(ROOT / "tests" / "support" / "migrations").glob("0*.py"),
        ]
        assert applied == (len(on_disk),)


def test_each_database_is_empty_and_separate(postgres, postgres_database):
    django(pg_env(postgres, postgres_database), "migrate", "--noinput", "-v", "0")
    with postgres.connect(postgres_database) as conn:
        assert conn.execute("SELECT count(*) FROM tests_execution").fetchone() == (0,)
    with postgres.connect() as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'tests_execution'")
        assert tables.fetchone() == (0,)


def test_a_stopped_server_leaves_no_process_and_no_directory(postgres):
    # A second server beside the session's (whose fixture skips where none can run).
    server = PostgresServer(dbname="leftovers").start()
    assert server.port != postgres.port
    directory, port, pid = server.directory, server.port, server.pid
    assert pid is not None and server.is_running

    server.stop()

    assert not server.is_running
    assert server.exit_status == 0  # a clean fast shutdown, not a kill
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={port} user={server.user} dbname=leftovers")
    server.stop()  # twice is harmless
