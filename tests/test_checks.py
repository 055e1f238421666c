"""Django system checks."""

from __future__ import annotations

import sys
import types

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_idempotency import checks
from django_idempotency.conf import SETTINGS, check_id
from django_idempotency.middleware import IdempotencyMiddleware

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
    assert ids(errors) == [check_id("SCOPE")]
    assert 'IDEMPOTENCY["SCOPE"]' in errors[0].msg


def test_every_bad_setting_is_reported_at_once_each_under_its_own_id(settings):
    settings.IDEMPOTENCY = {"TTL": -1, "CONFLICT": "queue", "LOCKTTL": 5, "REDIS": "default"}
    errors = checks.check_settings()
    assert sorted(ids(errors)) == sorted(
        ["django_idempotency.E100", check_id("TTL"), check_id("CONFLICT")]
    )
    assert len({check_id(f.name) for f in SETTINGS}) == len(SETTINGS)  # one id per setting
    unknown = next(e for e in errors if e.id == "django_idempotency.E100")
    assert "'LOCKTTL'; did you mean 'LOCK_TTL'?" in unknown.msg


def test_a_misspelled_setting_in_another_case_is_still_recognised(settings):
    settings.IDEMPOTENCY = {"wait_timeout": 5}
    assert "did you mean 'WAIT_TIMEOUT'?" in checks.check_settings()[0].msg


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


@pytest.mark.parametrize(
    ("opt", "refused"),
    [
        ({"master": True, "processes": b"2"}, True),  # uWSGI's defaults: no threads
        ({"enable-threads": True}, False),  # --enable-threads
        ({"enable-threads": b"true"}, False),  # enable-threads = true in an ini file
        ({"threads": b"8"}, False),  # --threads enables them too
        ({"enable-threads": True, "has_threads": 0}, True),  # it says it runs none
    ],
)
def test_uwsgi_without_threads_is_an_error_and_refused(monkeypatch, opt, refused):
    # The `uwsgi` module exists only inside a uWSGI process (tests/test_deploy.py starts
    # real ones); here it carries just the options uWSGI was started with.
    opt = dict(opt)
    has_threads = opt.pop("has_threads", 1)
    uwsgi = types.SimpleNamespace(opt=opt, has_threads=has_threads)
    monkeypatch.setitem(sys.modules, "uwsgi", uwsgi)
    assert ids(checks.check_threads()) == (["django_idempotency.E004"] if refused else [])
    if refused:
        with pytest.raises(ImproperlyConfigured, match="enable-threads = true"):
            IdempotencyMiddleware(lambda request: None)
    else:
        IdempotencyMiddleware(lambda request: None)


def test_outside_uwsgi_threads_are_not_checked():
    assert "uwsgi" not in sys.modules
    assert checks.check_threads() == []
