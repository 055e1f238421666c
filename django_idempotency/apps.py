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
    """Install the observers ``IDEMPOTENCY["OBSERVERS"]`` names (none while that key is
    invalid: the system checks report it, naming the setting).

    Only that key is read here, and nothing is cached: the settings as a whole are still
    built on first use, so code that adjusts them after ``django.setup()`` is honoured.
    """
    from django.conf import settings

    from . import events
    from .conf import SETTING_NAME, observers_setting

    user = getattr(settings, SETTING_NAME, None)
    try:
        observers = observers_setting(user.get("OBSERVERS", ()) if isinstance(user, dict) else ())
    except ImproperlyConfigured:
        observers = ()
    events.configure(observers)
