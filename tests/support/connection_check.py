"""Run by tests/test_assert_idempotent.py with ``tests.support.pg_settings``: after
``assert_idempotent`` sent concurrent duplicates to a view that writes a row, print how
many connections to the database are left (one: the main thread's, asking).

A backend leaves ``pg_stat_activity`` a moment after its client closed the connection,
so the count is read until it is 1, for at most 30 seconds; a connection left open
never leaves, and the last count read is printed.
"""

from __future__ import annotations

import time

import django


def main() -> None:
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from django_idempotency.testing import assert_idempotent

    setup_test_environment()
    call_command("migrate", verbosity=0)
    assert_idempotent(Client(), "POST", "/db/", {"a": 1}, concurrency=8)
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while True:
            cursor.execute(query)
            count = cursor.fetchone()[0]
            if count == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    print(count)


if __name__ == "__main__":
    main()
