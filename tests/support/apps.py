from django.apps import AppConfig


class SupportConfig(AppConfig):
    """The test project's own app; labelled ``tests`` so its tables are ``tests_*``."""

    name = "tests.support"
    label = "tests"
    default_auto_field = "django.db.models.AutoField"
