"""Django system checks."""

from __future__ import annotations

import pytest

from django_idempotency import checks

pytestmark = pytest.mark.no_redis

MW = checks.MIDDLEWARE_PATH
AUTH = checks.AUTH_MIDDLEWARE_PATH


def ids(messages):
    return [m.id for m in messages]


def test_valid_configuration_has_no_errors(settings):
    settings.IDEMPOTENCY = {"REDIS": "default"}
    assert checks.check_settings() == []
    assert checks.check_redis() == []
    assert checks.check_middleware_order() == []


def test_middleware_before_authentication_is_an_error(settings):
    settings.MIDDLEWARE = [MW, AUTH]
    assert ids(checks.check_middleware_order()) == ["django_idempotency.E003"]


def test_unknown_cache_alias_is_an_error(settings):
    settings.IDEMPOTENCY = {"REDIS": "payments"}
    assert ids(checks.check_redis()) == ["django_idempotency.E002"]


def test_non_redis_cache_alias_is_an_error(settings):
    settings.CACHES = {
        **settings.CACHES,
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    settings.IDEMPOTENCY = {"REDIS": "local"}
    assert ids(checks.check_redis()) == ["django_idempotency.E002"]


def test_unimportable_dotted_path_is_an_error(settings):
    settings.IDEMPOTENCY = {"SCOPE": "myapp.nowhere.scope"}
    errors = checks.check_settings()
    assert ids(errors) == ["django_idempotency.E001"]
    assert 'IDEMPOTENCY["SCOPE"]' in errors[0].msg


def test_checks_run_through_manage_py_check(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.MIDDLEWARE = [MW, AUTH]
    with pytest.raises(SystemCheckError, match="E003"):
        call_command("check")


def test_durable_with_the_middleware_is_a_warning(settings):
    settings.MIDDLEWARE = [AUTH, MW]
    settings.IDEMPOTENCY = {"REDIS": "default", "DURABLE": True}
    assert ids(checks.check_durable_middleware()) == ["django_idempotency.W003"]
    settings.IDEMPOTENCY = {"REDIS": "default"}
    assert checks.check_durable_middleware() == []
    settings.IDEMPOTENCY = {"REDIS": "default", "DURABLE": True}
    settings.MIDDLEWARE = [AUTH]
    assert checks.check_durable_middleware() == []
