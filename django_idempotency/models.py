"""A table-less model, only so the admin can list "Idempotency keys" and gate them.

Records live in Redis and nowhere else. Django's admin, though, registers models,
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


class StoredResponse(models.Model):
    """A durable view's response, written in the view's own database transaction.

    Redis stays the coordination layer (claims, leases, waiters, fast replays). This row
    is the fallback when Redis no longer has the record: a worker killed after its
    transaction committed but before the Redis store, or a Redis that lost its data. It
    commits or rolls back with the view's work, so it exists exactly when the work did.
    """

    scope = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    fingerprint = models.BinaryField()
    state = models.CharField(max_length=16)
    status = models.PositiveSmallIntegerField(null=True)
    payload = models.BinaryField()
    created = models.DateTimeField()
    expires = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="idempotency_stored_scope_key")
        ]
        verbose_name = "stored response"
        verbose_name_plural = "stored responses"

    def __str__(self) -> str:
        return f"{self.scope}/{self.key}"
