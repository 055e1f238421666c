"""settings.IDEMPOTENCY validation and reload."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_idempotency.conf import build, get_settings

pytestmark = [pytest.mark.no_redis, pytest.mark.matrix]


@pytest.mark.parametrize(
    "setting, value",
    [
        ("TTL", -1),
        ("TTL", "1h"),
        ("LOCK_TTL", 0),
        ("WAIT_TIMEOUT", True),
        ("CONFLICT", "queue"),
        ("ON_REDIS_ERROR", "ignore"),
        ("METHODS", "POST"),
        ("METHODS", ["POST", "FETCH"]),
        ("REQUIRED", "yes"),
        ("MAX_KEY_LENGTH", 0),
        ("MAX_BODY_BYTES", 1.5),
        ("KEY_FORMAT", "("),
        ("KEY_FORMAT", 42),
        ("SCOPE", "no.such.module.scope"),
        ("FINGERPRINT", 42),
        ("REDIS", "http://localhost"),
        ("REDIS", ""),
        ("KEY_PREFIX", "a{b}"),
        ("HEADER", ""),
        ("STORE_SERVER_ERRORS", 1),
        ("VALUE_SERIALIZER", "json"),
    ],
)
def test_bad_value_raises_improperly_configured_naming_the_key(setting, value):
    with pytest.raises(ImproperlyConfigured, match=rf'IDEMPOTENCY\["{setting}"\]'):
        build({setting: value})


def test_unknown_key_is_named():
    with pytest.raises(ImproperlyConfigured, match="LOCKTTL"):
        build({"LOCKTTL": 5})


def test_not_a_dict_is_refused():
    with pytest.raises(ImproperlyConfigured, match="must be a dict"):
        build(["TTL", 5])


def test_defaults_are_documented_values():
    s = build({})
    assert (s.TTL, s.LOCK_TTL, s.WAIT_TIMEOUT) == (86400, 30, 10)
    assert {"POST", "PATCH"} == s.METHODS
    assert (s.CONFLICT, s.ON_REDIS_ERROR, s.REDIS) == ("wait", "fail_closed", "default")


def test_durations_accept_timedelta_and_methods_are_uppercased():
    s = build({"TTL": timedelta(hours=1), "METHODS": ["post", "put"]})
    assert s.TTL == 3600
    assert {"POST", "PUT"} == s.METHODS


def test_key_format_uuid_and_regex():
    assert build({"KEY_FORMAT": "uuid"}).KEY_FORMAT.fullmatch(  # type: ignore[union-attr]
        "8e03978e-40d5-43e8-bc93-6894a57f9324"
    )
    assert build({"KEY_FORMAT": r"[a-z]{8,}"}).KEY_FORMAT.fullmatch("abcdefgh")  # type: ignore[union-attr]


def test_settings_reload_on_override(settings):
    settings.IDEMPOTENCY = {"TTL": 5}
    assert get_settings().TTL == 5
    settings.IDEMPOTENCY = {"TTL": 7}
    assert get_settings().TTL == 7


def test_bad_settings_surface_on_first_use(settings):
    settings.IDEMPOTENCY = {"LOCK_TTL": -1}
    with pytest.raises(ImproperlyConfigured, match=r'IDEMPOTENCY\["LOCK_TTL"\]'):
        get_settings()


def client_factory():
    import redis

    return redis.Redis()


def test_redis_accepts_alias_url_and_factory_path():
    assert build({"REDIS": "payments"}).REDIS == "payments"
    assert build({"REDIS": "unix:///tmp/r.sock"}).REDIS == "unix:///tmp/r.sock"
    assert build({"REDIS": "tests.test_conf.client_factory"}).REDIS is client_factory
    with pytest.raises(ImproperlyConfigured, match=r'IDEMPOTENCY\["REDIS"\]'):
        build({"REDIS": "tests.nowhere.factory"})
