"""Django app config: registers the system checks."""

from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    """The ``django_idempotency`` app."""

    name = "django_idempotency"
    verbose_name = "Idempotency"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        """Import the checks so ``@register`` runs."""
        from . import checks  # noqa: F401
