"""Plain Django forms, double-submit-proof with ``{% idempotency_key_field %}``.

The tag's output, how each door reads the key from a form (Django's test client, the
in-memory store: these tests are about reading the key, not about Redis), and a real
double click in headless Chromium against gunicorn and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.template import engines
from django.test import AsyncClient, Client

from .support.browser import GUARD, Browser, ProtocolError
from .support.models import Execution
from .support.servers import eventually, migrate, serve, server_env
from .test_admin import chromium

pytestmark = [pytest.mark.no_redis, pytest.mark.urls("tests.support.forms")]

MEMORY = "django_idempotency.stores.memory.open_store"
FORM = "application/x-www-form-urlencoded"
KEY_INPUT = "document.querySelector('input[name=idempotency_key]').value"


@pytest.fixture
def memory(settings: Any) -> Any:
    """The doors on the in-memory store."""
    settings.IDEMPOTENCY = {"STORE": MEMORY}
    return settings


class Inputs(HTMLParser):
    """The attributes of every ``<input>`` of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[dict[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "input":
            self.found.append(dict(attrs))


def key_fields(html: str, name: str = "idempotency_key") -> list[dict[str, str | None]]:
    return [attrs for attrs in Inputs(html).found if attrs.get("name") == name]


def render(source: str) -> str:
    return engines["django"].from_string("{% load idempotency %}" + source).render({})


def page_key(client: Client) -> str:
    """The key of the donation form as ``GET /form/`` renders it."""
    (field,) = key_fields(client.get("/form/").content.decode())
    assert field["value"] is not None
    return field["value"]


def donation(key: str, **fields: Any) -> dict[str, Any]:
    return {"name": "Ada", "amount": 500, "idempotency_key": key, **fields}


def replayed(response: Any) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


# -- the tags ----------------------------------------------------------------------------


def test_the_field_is_hidden_and_holds_a_fresh_random_uuid_each_time_it_is_rendered():
    fields = key_fields(render("{% idempotency_key_field %}{% idempotency_key_field %}"))
    fields += key_fields(render("{% idempotency_key_field %}"))
    assert len(fields) == 3
    for field in fields:
        assert field["type"] == "hidden"
        # Else Firefox puts the old key back into a reloaded form.
        assert field["autocomplete"] == "off"
        assert uuid.UUID(str(field["value"])).version == 4
    assert len({field["value"] for field in fields}) == 3


def test_the_field_is_named_by_the_form_field_setting(settings):
    settings.IDEMPOTENCY = {"STORE": MEMORY, "FORM_FIELD": "token"}
    html = render("{% idempotency_key_field %}")
    assert key_fields(html) == []
    assert len(key_fields(html, "token")) == 1


def test_the_bare_key_kept_in_a_variable_is_one_key():
    first, second, other = render(
        "{% idempotency_key as key %}{{ key }} {{ key }} {% idempotency_key %}"
    ).split()
    assert first == second != other
    assert uuid.UUID(first).version == uuid.UUID(other).version == 4


# -- the doors read the key from the form ------------------------------------------------


@pytest.mark.django_db
def test_a_double_submit_donates_once_and_both_submissions_go_to_its_page(memory):
    client = Client()
    key = page_key(client)
    body = urlencode(donation(key))
    first, second = (client.post("/form/", body, content_type=FORM) for _ in range(2))
    assert first.status_code == second.status_code == 302
    assert not replayed(first) and replayed(second)
    assert second["Location"] == first["Location"]
    (row,) = Execution.objects.all()
    assert row.key == key
    assert first["Location"] == f"/form/done/{row.pk}/"

    # The form rendered again has a new key: submitting it is a new donation.
    again = client.post("/form/", urlencode(donation(page_key(client))), content_type=FORM)
    assert again.status_code == 302 and not replayed(again)
    assert again["Location"] != first["Location"]
    assert Execution.objects.count() == 2


@pytest.mark.django_db
def test_a_form_shown_again_with_its_errors_has_a_new_key(memory):
    client = Client()
    key = page_key(client)
    body = urlencode(donation(key, amount=0))  # below the form's minimum
    first, second = (client.post("/form/", body, content_type=FORM) for _ in range(2))
    assert first.status_code == 200 and replayed(second)  # the double click: one answer
    assert second.content == first.content
    (field,) = key_fields(first.content.decode())
    assert field["value"] != key
    corrected = urlencode(donation(str(field["value"])))
    assert client.post("/form/", corrected, content_type=FORM).status_code == 302
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_a_multipart_form_is_read_too_and_the_view_still_gets_its_fields(memory):
    client = Client()
    key = page_key(client)
    first, second = (client.post("/form/", donation(key)) for _ in range(2))  # multipart
    assert first.status_code == 302 and replayed(second)
    assert Execution.objects.count() == 1
    # A DRF view parses the body after the door read the key from it.
    other = str(uuid.uuid4())  # a key is for one request: a new one for another path
    drf = [client.post("/drf/", donation(other, amount=700)) for _ in range(2)]
    assert drf[0].json()["amount"] == "700"
    assert replayed(drf[1]) and drf[1].json() == drf[0].json()


@pytest.mark.django_db
def test_the_header_wins_over_the_field(memory):
    client = Client()
    header_key, field_key = str(uuid.uuid4()), str(uuid.uuid4())
    body = urlencode(donation(field_key))
    with_header = client.post("/form/", body, content_type=FORM, HTTP_IDEMPOTENCY_KEY=header_key)
    field_only = client.post("/form/", body, content_type=FORM)
    assert not replayed(with_header) and not replayed(field_only)  # two keys: two runs
    assert Execution.objects.count() == 2
    assert replayed(client.post("/form/", body, content_type=FORM))


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["", "two words", "x" * 256, "caf\u00e9"])
def test_a_bad_key_in_the_field_gets_the_header_s_400(memory, value):
    response = Client().post("/form/", urlencode(donation(value)), content_type=FORM)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("invalid-key")
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_key_format_applies_to_the_field_and_the_tag_s_keys_satisfy_uuid(settings):
    settings.IDEMPOTENCY = {"STORE": MEMORY, "KEY_FORMAT": "uuid"}
    client = Client()
    bad = client.post("/form/", urlencode(donation("order-1")), content_type=FORM)
    assert bad.status_code == 400
    good = client.post("/form/", urlencode(donation(page_key(client))), content_type=FORM)
    assert good.status_code == 302


@pytest.mark.django_db
def test_a_reused_key_with_other_fields_is_refused(memory):
    client = Client()
    key = page_key(client)
    client.post("/form/", urlencode(donation(key)), content_type=FORM)
    # Back to the same rendered form, another amount, submitted again.
    changed = client.post("/form/", urlencode(donation(key, amount=900)), content_type=FORM)
    assert changed.status_code == 422
    assert changed.json()["type"].endswith("fingerprint-mismatch")
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_keys_from_forms_are_scoped_per_user(memory):
    users = [get_user_model().objects.create_user(name) for name in ("ada", "bob")]
    key = str(uuid.uuid4())
    for user in users:
        client = Client()
        client.force_login(user)
        responses = [
            client.post("/form/", urlencode(donation(key)), content_type=FORM) for _ in range(2)
        ]
        assert [replayed(r) for r in responses] == [False, True]
    assert Execution.objects.count() == 2


@pytest.mark.django_db
def test_required_accepts_the_field_and_names_it_when_it_is_missing(memory):
    client = Client()
    missing = client.post("/decorator-strict/", urlencode({"a": 1}), content_type=FORM)
    assert missing.status_code == 400
    assert "idempotency_key field" in missing.json()["detail"]
    body = urlencode({"a": 1, "idempotency_key": str(uuid.uuid4())})
    first, second = (client.post("/decorator-strict/", body, content_type=FORM) for _ in "12")
    assert first.status_code == 201 and not replayed(first)
    assert replayed(second) and second.content == first.content


@pytest.mark.django_db
def test_a_urlencoded_patch_is_read_and_a_json_body_is_not(memory):
    client = Client()
    body = urlencode({"idempotency_key": str(uuid.uuid4())})
    patches = [client.patch("/middleware/", body, content_type=FORM) for _ in range(2)]
    assert [replayed(r) for r in patches] == [False, True]
    # A JSON body is not a form: its "idempotency_key" is data, and JSON clients send
    # the header. Both requests run.
    document = json.dumps({"idempotency_key": str(uuid.uuid4())})
    posts = [client.post("/middleware/", document, content_type="application/json") for _ in "12"]
    assert [replayed(r) for r in posts] == [False, False]
    assert posts[0].json()["n"] != posts[1].json()["n"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/async/", "/async-plain/"])  # decorator, middleware
def test_async_doors_read_the_field_too(memory, path):
    body = urlencode({"idempotency_key": str(uuid.uuid4())})

    async def twice() -> list[Any]:
        client = AsyncClient()
        return [await client.post(path, body, content_type=FORM) for _ in range(2)]

    first, second = asyncio.run(twice())
    assert first.status_code == 201 and not replayed(first)
    assert replayed(second) and second.json() == first.json()


# -- a real browser ----------------------------------------------------------------------


def location(browser: Browser) -> str:
    """The page's path, or "" while a navigation has no document to ask yet."""
    try:
        return str(browser.evaluate("location.pathname"))
    except ProtocolError:
        return ""


@pytest.mark.slow
def test_a_double_click_in_chromium_donates_once_and_both_clicks_end_on_its_page(
    redis_server: Any, tmp_path: Path
) -> None:
    binary = chromium()
    db = tmp_path / "forms.sqlite3"
    env = server_env(redis_server.url, db, DJANGO_SETTINGS_MODULE="tests.support.forms_settings")
    migrate(env)
    redis = redis_server.client(socket_timeout=None)
    gate = f"gate-{uuid.uuid4().hex}"
    with (
        # Threads: Chromium opens spare connections ahead of need, and each would hold
        # a synchronous worker until gunicorn's timeout.
        serve("gunicorn", env, workers=2, threads=4) as port,
        Browser(binary, tmp_path / "profile") as browser,
    ):
        browser.open(f"http://127.0.0.1:{port}/form/?gate={gate}")
        rendered = browser.evaluate(KEY_INPUT)
        browser.page("Page.reload")
        browser.wait_for_event("Page.loadEventFired")
        key = browser.evaluate(KEY_INPUT)
        assert uuid.UUID(key).version == 4
        assert key != rendered  # a reload renders the form with a new key

        button = browser.centre("button")
        browser.click(button, count=1)
        # The first submission is in the view (its row written), held at the gate...
        assert redis.blpop([f"{gate}:entered"], timeout=GUARD) is not None
        browser.click(button, count=2)  # ... when the second click submits again.
        arrived = [redis.blpop([f"{gate}:arrived"], timeout=GUARD) for _ in range(2)]
        assert [item[1].decode() for item in arrived if item] == [key, key]
        # Both reached the server with the same key; now let the first finish (and a
        # second execution too, were there one, so that it would be counted, not hang).
        redis.rpush(f"{gate}:open", "go", "go")

        # The browser follows the answer to the second click (it dropped the first
        # navigation when the second began): the first's redirect, replayed.
        path = eventually(lambda: location(browser).startswith("/form/done/") and location(browser))
        text = browser.evaluate("document.body.innerText")

    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, key FROM tests_execution").fetchall()
    assert [row_key for _, row_key in rows] == [key]  # one donation
    ((pk, _),) = rows
    assert path == f"/form/done/{pk}/"
    assert f"donation {pk}" in text
    assert redis.llen(f"{gate}:entered") == 0  # the view ran once: nobody else entered
    redis.close()
