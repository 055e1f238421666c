from typing import Any

from django.db import models
from django.db.backends.signals import connection_created
from django.dispatch import receiver


@receiver(connection_created)
def _fast_sqlite_commits(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Commits without an fsync each (WAL mode keeps that safe against a crashed process).

    The storm tests send 2,000 writing requests at once; with an fsync per commit a busy
    machine queues them past SQLite's busy timeout ("database is locked", a 500).
    """
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=NORMAL")


class Execution(models.Model):
    """One row per time a test view's side effect really ran."""

    key = models.CharField(max_length=255)
    created = models.DateTimeField(auto_now_add=True)
