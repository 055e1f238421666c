"""Django app config: registers the system checks and installs the configured observers."""

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class IdempotencyConfig(AppConfig):
    """The ``django_idempotency`` app."""

    name = "django_idempotency"
    verbose_name = "Idempotency"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        """Import the checks so ``@register`` runs; install ``IDEMPOTENCY["OBSERVERS"]``."""
        from . import checks  # noqa: F401
        from .conf import on_reload

        install_observers()
        on_reload(install_observers)


def install_observers() -> None:
    """Install the observers the settings name (none while the settings are invalid:
    the system checks report that, naming the setting)."""
    from . import events
    from .conf import get_settings

    try:
        observers = get_settings().OBSERVERS
    except ImproperlyConfigured:
        observers = ()
    events.configure(observers)
