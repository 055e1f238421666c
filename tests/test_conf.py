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


# -- the audit: every setting is checked, under its own id ---------------------------------

#: A bad value of every setting.
EVERY_BAD = {
    "REDIS": "http://localhost",
    "ASYNC_REDIS": 42,
    "KEY_PREFIX": "a{b}",
    "TTL": -1,
    "LOCK_TTL": 0,
    "WAIT_TIMEOUT": True,
    "CONFLICT": "queue",
    "MAX_WAITERS": 0,
    "ON_REDIS_ERROR": "ignore",
    "HEADER": "",
    "METHODS": "POST",
    "REQUIRED": "yes",
    "MAX_KEY_LENGTH": 0,
    "KEY_FORMAT": "(",
    "MAX_BODY_BYTES": 1.5,
    "SCOPE": "no.such.module.scope",
    "FINGERPRINT": 42,
    "REPLAY_HEADER": "",
    "STORE_SERVER_ERRORS": 1,
    "VALUE_SERIALIZER": "json",
    "ERROR_SERIALIZER": object(),
    "COMPRESS_MIN_BYTES": -1,
    "ENCRYPTION_KEYS": ["too-short"],
    "DURABLE": "yes",
    "OBSERVERS": [object()],
    "STORE": 42,
    "FORM_FIELD": "",
    "STORE_RESPONSES": "2xx-6xx",
    "OUTCOME_UNKNOWN": "retry",
    "PROBLEM_TYPE_BASE": "not a uri",
    "DRF_EXCEPTION_HANDLER": "yes",
}


def test_the_audit_covers_every_setting():
    from django_idempotency.conf import DEFAULTS

    assert list(EVERY_BAD) == list(DEFAULTS)


@pytest.mark.parametrize("setting", list(EVERY_BAD))
def test_every_setting_refuses_a_bad_value_under_its_own_check_id(setting):
    from django_idempotency.conf import check_id, problems

    with pytest.raises(ImproperlyConfigured, match=rf'IDEMPOTENCY\["{setting}"\]'):
        build({setting: EVERY_BAD[setting]})
    _, found = problems({setting: EVERY_BAD[setting]})
    assert [p.id for p in found] == [check_id(setting)]


def test_store_responses_and_store_server_errors_together_are_refused():
    from django_idempotency.conf import check_id, problems

    with pytest.raises(ImproperlyConfigured, match=r"STORE_SERVER_ERRORS.*both"):
        build({"STORE_RESPONSES": "2xx", "STORE_SERVER_ERRORS": True})
    _, found = problems({"STORE_RESPONSES": "2xx", "STORE_SERVER_ERRORS": True})
    assert [p.id for p in found] == [check_id("STORE_RESPONSES")]


def test_the_store_policy_folds_store_server_errors_in():
    from django.http import HttpResponse

    def stored(settings: dict[str, object], status: int) -> bool:
        return bool(build(settings).STORE_RESPONSES(HttpResponse(status=status)))

    assert [stored({}, s) for s in (201, 302, 400, 500)] == [True, True, True, False]
    assert stored({"STORE_SERVER_ERRORS": True}, 500)
    assert [stored({"STORE_RESPONSES": "2xx"}, s) for s in (201, 302, 400)] == [True, False, False]


def test_policy_settings_accept_what_they_document():
    s = build({"OUTCOME_UNKNOWN": "refuse", "PROBLEM_TYPE_BASE": "urn:example:problem:"})
    assert (s.OUTCOME_UNKNOWN, s.PROBLEM_TYPE_BASE) == ("refuse", "urn:example:problem:")
    assert build({}).DRF_EXCEPTION_HANDLER is False
