"""The admin's table-less model, and durable mode's table.

:class:`IdempotencyKey`: records live in Redis (and, for durable keys, in
:class:`DurableRecord` too). Django's admin, though, registers models,
and its permissions hang off a model's content type. :class:`IdempotencyKey` is an
unmanaged model (``managed = False``): its migration creates no table, nothing ever
queries it, and it exists so that

* the admin index shows an "Idempotency keys" entry under "Idempotency", and
* ``django_idempotency.view_idempotencykey`` (list and detail) and
  ``django_idempotency.delete_idempotencykey`` (purge) are ordinary permissions,
  granted to staff users or groups like any other.

A custom ``AdminSite`` or a hand-made permission would need no model, but would make
every project change its admin set-up or create the permission itself; this way,
adding the app to ``INSTALLED_APPS`` and migrating is all it takes.
"""

from __future__ import annotations

from django.db import models


class IdempotencyKey(models.Model):
    """Stands for the records in Redis; see the module docstring. Never queried."""

    class Meta:
        managed = False
        default_permissions = ("view", "delete")
        verbose_name = "idempotency key"
        verbose_name_plural = "idempotency keys"

    def __str__(self) -> str:
        return "idempotency key"


class DurableRecord(models.Model):
    """A final record of durable mode, kept in the database as well as in Redis.

    Written in the transaction of the work it records (a durable view's, or a durable
    ``run()``'s), so it exists exactly when that work committed. Redis stays the
    coordination layer (claims, leases, waiters, fast replays); a key Redis has no
    record of is looked up here before its action runs. ``record`` holds the same
    sealed bytes as Redis (MAC'd, maybe compressed and encrypted); ``rid`` is the
    record id, so no client key or scope is stored in clear.
    """

    rid = models.CharField(max_length=24, primary_key=True)
    record = models.BinaryField()
    #: Unix time in milliseconds, as records count time: an integer compares the same on
    #: every database, with no time zone to convert.
    expires_ms = models.BigIntegerField(db_index=True)

    class Meta:
        # Rows are written by the doors only; staff may look and purge, as for records.
        default_permissions = ("view", "delete")
        verbose_name = "durable record"
        verbose_name_plural = "durable records"

    def __str__(self) -> str:
        return self.rid
