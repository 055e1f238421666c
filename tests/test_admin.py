"""The staff-only "Idempotency keys" admin pages, with the test client and in Chromium.

This module is also a URLconf (``urlpatterns`` below): the Chromium test logs in
through a test-only view, which the project's URLconf does not offer.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django.contrib.admin
import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model, login
from django.contrib.auth.models import Permission
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.test import Client
from django.urls import path
from pytest_django.live_server_helper import LiveServer

from django_idempotency.engine import now_ms

from .support.records import DONE, HTTP, RUN, RUNNING, sealed

ROOT = Path(__file__).resolve().parent.parent
LIST = "/admin/django_idempotency/idempotencykey/"
PURGE = LIST + "purge/"
ADMIN_STATIC = Path(django.contrib.admin.__file__).parent / "static"

pytestmark = pytest.mark.django_db


# -- a URLconf for the browser test ------------------------------------------------------


def _login_as(request: HttpRequest, username: str) -> HttpResponse:
    """Test-only: log ``username`` in and go to ``?next=`` (the browser has no form filler)."""
    login(request, get_user_model().objects.get(username=username))
    return HttpResponseRedirect(request.GET.get("next", "/admin/"))


urlpatterns = [
    path("admin/", admin.site.urls),
    path("test-login/<str:username>/", _login_as),
]


# -- data and users ----------------------------------------------------------------------


@pytest.fixture
def records(redis_client) -> dict[str, str]:
    """Three HTTP records and a run() one; returns key -> record id."""
    ids = {}
    now = now_ms()
    for state, kind, scope, key in (
        (DONE, HTTP, "user:1", "charge-001"),
        (DONE, HTTP, "user:2", "charge-002"),
        (RUNNING, HTTP, "user:1", "charge-003"),
        (DONE, RUN, "billing", "invoice:7"),
    ):
        redis_key, data = sealed(state, kind, scope, key, created_ms=now - 90_000)
        redis_client.set(redis_key, data, px=600_000)
        ids[key] = redis_key[redis_key.index("{") + 1 : -1]
    return ids


def user_client(*perms: str, staff: bool = True) -> Client:
    user = get_user_model().objects.create_user(
        username=f"u{'-'.join(perms) or 'none'}{staff}", password="x", is_staff=staff
    )
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def existing(redis_client: Any, ids: dict[str, str]) -> set[str]:
    return {key for key, rid in ids.items() if redis_client.exists(f"idem:{{{rid}}}")}


# -- access ------------------------------------------------------------------------------


def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(records):
    for client in (Client(), user_client("view_idempotencykey", staff=False)):
        response = client.get(LIST)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
        assert client.post(PURGE, {"_selected": records["charge-001"]}).status_code == 302


def test_staff_without_the_permission_get_403(records):
    client = user_client()
    assert client.get(LIST).status_code == 403
    assert client.get(LIST + records["charge-001"] + "/").status_code == 403
    assert client.post(PURGE, {"_selected": records["charge-001"]}).status_code == 403


def test_staff_with_view_permission_see_keys_but_cannot_purge(records, redis_client):
    client = user_client("view_idempotencykey")
    index = client.get("/admin/")
    assert "Idempotency keys" in index.content.decode()
    page = client.get(LIST).content.decode()
    for key in records:
        assert key in page
    assert "Purge selected" not in page
    response = client.post(PURGE, {"_selected": records["charge-001"], "confirm": "yes"})
    assert response.status_code == 403
    assert existing(redis_client, records) == set(records)


# -- list and detail ---------------------------------------------------------------------


def test_list_filters_and_search(records, admin_client):
    def keys(**query: str) -> set[str]:
        page = admin_client.get(LIST, query).content.decode()
        return {key for key in records if key in page}

    assert keys(state="running") == {"charge-003"}
    assert keys(door="run") == {"invoice:7"}
    assert keys(scope="user:1") == {"charge-001", "charge-003"}
    assert keys(q="CHARGE-00") == {"charge-001", "charge-002", "charge-003"}
    assert keys(q="billing") == {"invoice:7"}
    assert keys(older="1m") == set(records)
    assert keys(older="1h") == set()
    assert "not a duration" in admin_client.get(LIST, {"older": "soon"}).content.decode()
    # A value no record can have is reported, not dropped into a list of everything.
    refused = admin_client.get(LIST, {"state": "sleeping"})
    assert "unknown state(s): sleeping" in refused.content.decode()
    assert refused.context["rows"] == []


def test_list_pages_through_scan_batches_without_losing_records(redis_client, admin_client):
    pipe = redis_client.pipeline(transaction=False)
    for i in range(450):
        redis_key, data = sealed(DONE, HTTP, "s", f"page-{i:03}", created_ms=1)
        pipe.set(redis_key, data)
    pipe.execute()
    seen: list[str] = []
    url: str | None = LIST
    pages = 0
    while url:
        response = admin_client.get(url)
        rows = response.context["rows"]
        seen += [row.key for row in rows]
        url = response.context["next_url"] and LIST + response.context["next_url"]
        pages += 1
    assert pages >= 2
    assert sorted(set(seen)) == sorted(f"page-{i:03}" for i in range(450))


def test_detail_shows_the_whole_record(records, admin_client):
    page = admin_client.get(LIST + records["charge-001"] + "/").content.decode()
    assert "charge-001" in page and "user:1" in page
    assert "Content-Type" in page and "application/json" in page
    assert "{&quot;ok&quot;:true}" in page
    running = admin_client.get(LIST + records["charge-003"] + "/").content.decode()
    assert "Owner" in running and "0123456789abcdef01234567 (lease: " in running
    assert admin_client.get(LIST + "0" * 32 + "/").status_code == 404
    assert admin_client.get(LIST + "not-an-id/").status_code == 404


def test_redis_down_shows_an_error_instead_of_a_500(records, admin_client, settings):
    settings.IDEMPOTENCY = {"REDIS": "redis://127.0.0.1:1/0"}
    response = admin_client.get(LIST)
    assert response.status_code == 200
    assert "Redis is unreachable or failed" in response.content.decode()


# -- purge -------------------------------------------------------------------------------


def test_purge_of_selected_keys_goes_through_a_confirmation_page(
    records, admin_client, redis_client
):
    chosen = [records["charge-001"], records["invoice:7"]]
    confirm = admin_client.post(PURGE, {"_selected": chosen})
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "Are you sure you want to purge 2 idempotency keys?" in page
    assert existing(redis_client, records) == set(records)  # nothing deleted yet

    done = admin_client.post(PURGE, {"_selected": chosen, "confirm": "yes"}, follow=True)
    assert done.redirect_chain[-1][0] == LIST
    assert "Purged 2 idempotency key(s)." in done.content.decode()
    assert existing(redis_client, records) == {"charge-002", "charge-003"}


def test_a_running_key_is_kept_unless_the_confirmation_box_is_ticked(
    records, admin_client, redis_client
):
    rid = records["charge-003"]
    page = admin_client.post(PURGE, {"_selected": rid}).content.decode()
    assert "1 running record will be kept" in page
    assert "a second time" in page
    kept = admin_client.post(PURGE, {"_selected": rid, "confirm": "yes"}, follow=True)
    assert "Kept 1 running record(s)." in kept.content.decode()
    assert "charge-003" in existing(redis_client, records)
    admin_client.post(PURGE, {"_selected": rid, "confirm": "yes", "force": "1"})
    assert "charge-003" not in existing(redis_client, records)


def test_purge_all_matching_uses_the_list_filters(records, admin_client, redis_client):
    form = {"all_matching": "1", "state": "done", "scope": "user:1"}
    page = admin_client.post(PURGE, form).content.decode()
    assert "1 record matches right now" in page
    admin_client.post(PURGE, {**form, "confirm": "yes"})
    assert existing(redis_client, records) == {"charge-002", "charge-003", "invoice:7"}


def test_purge_without_a_selection_goes_back_to_the_list(records, admin_client):
    response = admin_client.post(PURGE, {}, follow=True)
    assert "Select the records to purge first." in response.content.decode()
    assert admin_client.get(PURGE).status_code == 302


# -- a real browser ----------------------------------------------------------------------


def chromium() -> str:
    """The Chromium binary, installing it with scripts/ensure-chromium if need be."""
    found = shutil.which("chromium")
    if found:
        return found
    script = subprocess.run(
        [str(ROOT / "scripts" / "ensure-chromium")], capture_output=True, text=True, check=False
    )
    found = shutil.which("chromium")
    if not found:
        why = (script.stdout + script.stderr).strip() or "scripts/ensure-chromium printed nothing"
        pytest.skip(f"chromium is not installed and could not be installed: {why}")
    return found


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        # A guard against a hung browser, not a performance assertion.
        timeout=180,
        check=False,
    )


def screenshot(binary: str, directory: Path, url: str, name: str, size: str) -> Path:
    """A PNG of ``url`` at ``size`` (``"1280,800"``) saved in ``directory``; checked to be one."""
    shot = directory / name
    result = headless(
        binary, directory / f"profile-{name}", f"--screenshot={shot}", f"--window-size={size}", url
    )
    assert shot.exists(), result.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    return shot


@pytest.fixture
def styled_live_server(transactional_db: None, settings: Any) -> Iterator[LiveServer]:
    """A live server that also serves the admin's CSS and images.

    tests/settings.py sets no ``STATIC_URL``, without which Django's live server
    cannot start its static files handler; this one serves the admin app's files.
    """
    settings.STATIC_URL = "/static/"
    settings.STATIC_ROOT = str(ADMIN_STATIC)
    server = LiveServer("localhost")
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.test_admin")
def test_staff_sees_the_keys_in_headless_chromium(records, styled_live_server, tmp_path):
    live_server = styled_live_server
    binary = chromium()
    get_user_model().objects.create_superuser("operator", "op@example.com", "x")
    url = f"{live_server.url}/test-login/operator/?next={LIST}"

    dom = headless(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert "Idempotency keys" in dom.stdout, dom.stderr[-2000:]
    for key in records:
        assert key in dom.stdout
    assert 'name="_selected"' in dom.stdout

    screenshot(binary, tmp_path, url, "idempotency-keys.png", "1280,800")

    detail = tmp_path / "idempotency-key-detail.png"
    url = f"{live_server.url}/test-login/operator/?next={LIST}{records['charge-001']}/"
    headless(
        binary,
        tmp_path / "profile-detail",
        f"--screenshot={detail}",
        "--window-size=1280,1000",
        url,
    )
    assert detail.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
