"""The dashboard above the admin's key list: counts by state, door, age and scope.

Records come through the real doors (the middleware, the decorator, DRF, ``run()``)
where a test client can reach them, and are written sealed for the job doors. Ages
are set by re-sealing a stored record with an earlier ``created_ms``, its TTL kept.

This module is also a URLconf (``urlpatterns`` below), for the Chromium test.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from pytest_django.live_server_helper import LiveServer

import django_idempotency
from django_idempotency.admin import CHART_TOP, IdempotencyKeyAdmin, age_chart
from django_idempotency.engine import now_ms
from django_idempotency.events import Door
from django_idempotency.inventory import (
    SCOPE_COUNTERS,
    Dashboard,
    Inventory,
    TopScopes,
    age_buckets,
)
from django_idempotency.records import Kind, Record, State
from django_idempotency.runtime import get_engine

from . import test_admin
from .support import urls as project_urls
from .support.records import DONE, HTTP, RUN, RUNNING, name_of, sealed
from .test_admin import LIST, chromium, headless, styled_live_server, user_client

__all__ = ["styled_live_server"]  # a fixture, imported from the admin tests to be used here

pytestmark = pytest.mark.django_db

#: For the browser test: the admin tests' URLconf (the admin, a test-only login) and the
#: project's doors, which the ``traffic`` fixture posts to.
urlpatterns = [
    *test_admin.urlpatterns,
    *(p for p in project_urls.urlpatterns if str(p.pattern) != "admin/"),
]

MINUTE, HOUR = 60_000, 3_600_000
#: The bucket labels with the default TTL of 24 h.
LABELS = ["< 1 min", "< 10 min", "< 1 h", "< 6 h", "< 24 h", ">= 24 h"]


# -- helpers -----------------------------------------------------------------------------


def post(client: Client, url: str, key: str) -> None:
    response = client.post(
        url,
        data=json.dumps({"amount": 10}),
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 201, response.content


def age(redis_client: Any, name: str, age_ms: int) -> None:
    """Make the record under ``name`` ``age_ms`` old: re-sealed, TTL unchanged."""
    sealer = get_engine().sealer
    rid = base64.urlsafe_b64decode(name[name.rindex("{") + 1 : -1] + "==")
    record = sealer.open(rid, redis_client.get(name))
    created = now_ms() - age_ms
    if record.state is State.RUNNING:
        data = sealer.running(
            rid,
            record.kind,
            record.scope,
            record.key,
            record.token,
            record.fingerprint,
            created,
            record.door,
        )
    else:
        took = (record.finished_ms or record.created_ms) - record.created_ms
        data = sealer.seal(
            rid, dataclasses.replace(record, created_ms=created, finished_ms=created + took)
        )
    assert redis_client.set(name, data, keepttl=True, xx=True)


class Element:
    """A tag's attributes and the text directly inside it."""

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.text = ""


class Page(HTMLParser):
    """The dashboard's elements that carry data, from a rendered page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self.open: list[Element] = []
        self.html = html
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self.open:
            self.open[-1].text += data

    def counts(self, attribute: str) -> dict[str, str]:
        """``data-<attribute>`` value -> the cell's text, in page order."""
        return {
            e.attrs[f"data-{attribute}"]: e.text.strip()
            for e in self.elements
            if f"data-{attribute}" in e.attrs
        }

    def bars(self) -> list[Element]:
        """The age chart's bars."""
        return [e for e in self.elements if e.tag == "rect" and "age-bar" in e.attrs["class"]]


def dashboard(client: Client, **query: str) -> tuple[dict[str, Any], Page]:
    response = client.get(LIST, query)
    assert response.status_code == 200
    board = response.context["dashboard"]
    assert board is not None, response.context.get("errors")
    return board, Page(response.content.decode())


# -- records from the doors --------------------------------------------------------------


@pytest.fixture
def traffic(redis_client: Any, admin_user: Any) -> dict[str, str]:
    """Records through every door, of known states, scopes and ages; key -> Redis key.

    ===================  =========  =======  =======  =========================
    door                 scope      records  state    ages
    ===================  =========  =======  =======  =========================
    middleware           anonymous  3        done     fresh, 5 min, 30 min
    decorator            anonymous  2        done     fresh, 3 h
    drf                  user:<pk>  1        done     12 h
    run()                billing    4        done     fresh, fresh, 5 min, 30 h
    run()                mail       1        error    fresh
    celery (sealed)      reports    2        done     3 h, 30 h
    tasks (sealed)       reports    1        done     fresh
    middleware (sealed)  anonymous  1        running  fresh
    ===================  =========  =======  =======  =========================
    """
    anonymous, staff = Client(), Client()
    staff.force_login(admin_user)
    names: dict[str, str] = {}
    for url, keys in (
        ("/middleware/", ["mw-1", "mw-2", "mw-3"]),
        ("/decorator/", ["dec-1", "dec-2"]),
    ):
        for key in keys:
            post(anonymous, url, key)
            names[key] = name_of(HTTP, "anonymous", key)
    post(staff, "/drf/", "drf-1")
    names["drf-1"] = name_of(HTTP, f"user:{admin_user.pk}", "drf-1")
    for key in ("inv-1", "inv-2", "inv-3", "inv-4"):
        assert django_idempotency.run(key, lambda: {"sent": True}, scope="billing")
        names[key] = name_of(RUN, "billing", key)

    def bounce() -> None:
        raise LookupError("no such mailbox")

    with pytest.raises(LookupError):
        django_idempotency.run("mail-1", bounce, scope="mail")
    names["mail-1"] = name_of(RUN, "mail", "mail-1")
    now = now_ms()
    for key, door in (("job-1", Door.CELERY), ("job-2", Door.CELERY), ("job-3", Door.TASKS)):
        name, data = sealed(DONE, RUN, "reports", key, created_ms=now, door=door)
        redis_client.set(name, data, px=86_400_000)
        names[key] = name
    name, data = sealed(RUNNING, HTTP, "anonymous", "mw-running", created_ms=now)
    redis_client.set(name, data, px=600_000)
    names["mw-running"] = name
    for key, ms in (
        ("mw-2", 5 * MINUTE),
        ("mw-3", 30 * MINUTE),
        ("dec-2", 3 * HOUR),
        ("drf-1", 12 * HOUR),
        ("inv-3", 5 * MINUTE),
        ("inv-4", 30 * HOUR),
        ("job-1", 3 * HOUR),
        ("job-2", 30 * HOUR),
    ):
        age(redis_client, names[key], ms)
    return names


def test_counts_by_state_door_age_and_scope(traffic, admin_client, admin_user):
    board, page = dashboard(admin_client)
    assert board["total"] == len(traffic) == 15
    assert page.counts("state") == {"running": "1", "done": "13", "error": "1", "unreplayable": "0"}
    assert page.counts("door") == {
        "middleware": "4",
        "decorator": "2",
        "drf": "1",
        "run": "5",
        "celery": "2",
        "tasks": "1",
    }
    bars = page.bars()
    assert [b.attrs["data-bucket"] for b in bars] == LABELS
    #       fresh  5min  30min  3h  12h  30h
    assert [int(b.attrs["data-count"]) for b in bars] == [7, 2, 1, 2, 1, 2]
    scopes = [(scope, int(count)) for scope, count in page.counts("scope").items()]
    assert scopes == [
        ("anonymous", 6),
        ("billing", 4),
        ("reports", 3),
        ("mail", 1),  # ties by name: "mail" < "user:..."
        (f"user:{admin_user.pk}", 1),
    ]
    assert board["scopes_exact"] and "may be low" not in page.html


def test_bar_heights_follow_the_counts(traffic, admin_client):
    _, page = dashboard(admin_client)
    bars = page.bars()
    counts = [int(b.attrs["data-count"]) for b in bars]
    heights = [float(b.attrs["height"]) for b in bars]
    for (count, height), (other, other_height) in itertools.combinations(
        zip(counts, heights, strict=True), 2
    ):
        assert (count < other) == (height < other_height)
        assert (count == other) == (height == other_height)
    # Bars stand on the axis: their bottoms line up whatever their height.
    bottoms = {round(float(b.attrs["y"]) + float(b.attrs["height"]), 1) for b in bars}
    assert len(bottoms) == 1
    # Every bar says what it counts, for a hover and for screen readers.
    assert "Records by age" in page.html
    assert "&lt; 1 min: 7 records" in page.html


@pytest.mark.no_redis
def test_the_chart_scales_bars_to_the_largest_count():
    chart = age_chart(["a", "b", "c", "d"], [0, 1, 500, 1000])
    # A bar of 1 would be 0.124 units tall: drawn 1 unit tall, so it shows at all.
    room = chart.base - CHART_TOP
    assert [bar.height for bar in chart.bars] == [0.0, 1.0, room / 2, room]
    assert all(bar.y + bar.height == chart.base for bar in chart.bars)
    assert chart.description == "a: 0; b: 1; c: 500; d: 1000"
    empty = age_chart(["a", "b"], [0, 0])
    assert [bar.height for bar in empty.bars] == [0.0, 0.0]


@pytest.mark.no_redis
@pytest.mark.parametrize(
    ("ttl", "labels"),
    [
        (86_400, LABELS),
        (3_600, ["< 1 min", "< 10 min", "< 1 h", ">= 1 h"]),
        (7 * 86_400, [*LABELS[:-1], "< 7 d", ">= 7 d"]),
        (90, ["< 1 min", "< 90 s", ">= 90 s"]),
        (2.5, ["< 2.5 s", ">= 2.5 s"]),
        (0.5, ["< 0.5 s", ">= 0.5 s"]),
    ],
)
def test_age_buckets_are_cut_short_of_the_ttl_and_at_it(ttl, labels):
    buckets = age_buckets(ttl)
    assert [bucket.label for bucket in buckets] == labels
    # Records older than TTL (a longer ttl given to a door, or TTL lowered since) are
    # told apart from the rest, however short TTL is.
    assert buckets[-2].upper_ms == round(ttl * 1000)
    assert buckets[-1].upper_ms is None


@pytest.mark.no_redis
def test_an_age_on_a_cut_falls_in_the_older_bucket():
    board = Dashboard.for_ttl(3_600)
    assert [board.bucket_of(ms) for ms in (0, MINUTE - 1, MINUTE, HOUR - 1, HOUR, 9 * HOUR)] == [
        0,
        0,
        1,
        2,
        3,
        3,
    ]


# -- top scopes --------------------------------------------------------------------------


@pytest.mark.no_redis
def test_top_scopes_are_exact_up_to_the_cap():
    scopes = TopScopes()
    assert scopes.capacity == SCOPE_COUNTERS == 1000
    for i in range(SCOPE_COUNTERS):
        for _ in range(i % 7 + 1):
            scopes.add(f"s{i:04}")
    assert scopes.exact and scopes.undercount == 0
    assert len(scopes.counts) == SCOPE_COUNTERS
    assert scopes.counts == {f"s{i:04}": i % 7 + 1 for i in range(SCOPE_COUNTERS)}
    # Ties are ranked by name, so the ranking does not depend on the scan's order.
    assert scopes.top(3) == [("s0006", 7), ("s0013", 7), ("s0020", 7)]


@pytest.mark.no_redis
def test_top_scopes_stay_bounded_above_the_cap_and_keep_the_heavy_hitters():
    scopes = TopScopes(capacity=10)
    true: dict[str, int] = {}
    stream = [f"rare-{i}" for i in range(5000)]
    # Two heavy scopes, each over 1/(capacity+1) of the records, spread through the stream.
    stream[::5] = ["heavy-a"] * len(stream[::5])
    stream[1::7] = ["heavy-b"] * len(stream[1::7])
    for scope in stream:
        scopes.add(scope)
        true[scope] = true.get(scope, 0) + 1
        assert len(scopes.counts) <= 10
    assert not scopes.exact and scopes.undercount > 0
    for scope, count in scopes.counts.items():
        assert true[scope] - scopes.undercount <= count <= true[scope]
    assert [scope for scope, _ in scopes.top(2)] == ["heavy-a", "heavy-b"]
    with pytest.raises(ValueError, match="positive"):
        TopScopes(capacity=0)


@pytest.mark.no_redis
def test_a_scope_met_when_the_counters_are_full_frees_the_spent_ones():
    scopes = TopScopes(capacity=2)
    for scope in ["a", "b", "c", "d", "d", "d", "b"]:
        scopes.add(scope)
    # "c" lowered a and b to 0, and counters at 0 are dropped so that d and b get one.
    assert scopes.counts == {"d": 3, "b": 1}
    assert scopes.undercount == 1
    assert scopes.top(5) == [("d", 3), ("b", 1)]


def test_more_scopes_than_counters_are_shown_as_lower_bounds(redis_client, admin_client):
    now = now_ms()
    pipe = redis_client.pipeline(transaction=False)
    for i in range(SCOPE_COUNTERS + 200):
        pipe.set(*sealed(DONE, RUN, f"tenant-{i:04}", "nightly", created_ms=now))
    for i in range(300):
        pipe.set(*sealed(DONE, RUN, "tenant-big", f"export-{i}", created_ms=now))
    pipe.execute()
    board, page = dashboard(admin_client)
    assert board["total"] == SCOPE_COUNTERS + 500
    assert not board["scopes_exact"]
    assert board["scopes"][0][0] == "tenant-big"
    assert 300 - board["scopes_undercount"] <= board["scopes"][0][1] <= 300
    assert page.counts("scope")["tenant-big"].startswith("\u2265 ")
    assert f"may be low by up to {board['scopes_undercount']}" in page.html


# -- the scan ----------------------------------------------------------------------------


@pytest.mark.topologies("single", "cluster")
def test_counts_stay_exact_over_many_scan_batches(topology, admin_client):
    for i in range(450):
        scope = "bulk-a" if i % 3 else "bulk-b"
        django_idempotency.run(f"bulk-{i:03}", lambda: "ok", scope=scope)
    batches: list[int] = []
    inventory = Inventory(get_engine(), count=IdempotencyKeyAdmin.scan_count)
    direct = inventory.dashboard(
        ttl_seconds=86_400, progress=lambda scanned, total: batches.append(total)
    )
    assert len(batches) >= 2, "one SCAN batch: the test proves nothing"
    assert direct.stats.total == 450
    board, page = dashboard(admin_client)
    assert board["total"] == 450
    assert page.counts("door")["run"] == "450"
    assert page.counts("state")["done"] == "450"
    assert sum(int(b.attrs["data-count"]) for b in page.bars()) == 450
    assert list(page.counts("scope").items()) == [("bulk-a", "300"), ("bulk-b", "150")]


# -- the list around it ------------------------------------------------------------------


def test_the_dashboard_counts_what_the_list_filters_select(traffic, admin_client, admin_user):
    board, page = dashboard(admin_client, door="run")
    assert board["total"] == 5
    assert page.counts("state") == {"running": "0", "done": "4", "error": "1", "unreplayable": "0"}
    assert list(page.counts("scope").items()) == [("billing", "4"), ("mail", "1")]
    assert "5 records matching these filters" in page.html

    board, page = dashboard(admin_client, state="running")
    assert board["total"] == 1
    assert page.counts("door")["middleware"] == "1"

    board, page = dashboard(admin_client, older="1h")
    assert [int(b.attrs["data-count"]) for b in page.bars()] == [0, 0, 0, 2, 1, 2]
    assert list(page.counts("scope").items()) == [
        ("reports", "2"),
        ("anonymous", "1"),
        ("billing", "1"),
        (f"user:{admin_user.pk}", "1"),
    ]

    board, page = dashboard(admin_client, scope="reports", q="JOB-")
    assert board["total"] == 3
    assert page.counts("door") == {
        "middleware": "0",
        "decorator": "0",
        "drf": "0",
        "run": "0",
        "celery": "2",
        "tasks": "1",
    }
    # A filter the list refuses shows its error, and no dashboard of everything instead.
    refused = admin_client.get(LIST, {"older": "soon"})
    assert refused.context["dashboard"] is None
    assert 'id="idempotency-dashboard"' not in refused.content.decode()


def test_the_dashboard_is_on_the_first_page_only(redis_client, admin_client):
    pipe = redis_client.pipeline(transaction=False)
    for i in range(450):
        pipe.set(*sealed(DONE, HTTP, "s", f"page-{i:03}", created_ms=now_ms()))
    pipe.execute()
    first = admin_client.get(LIST)
    assert first.context["dashboard"]["total"] == 450
    assert 'id="idempotency-dashboard"' in first.content.decode()
    assert first.context["next_url"]
    second = admin_client.get(LIST + first.context["next_url"])
    assert second.context["rows"] and second.context["dashboard"] is None
    assert 'id="idempotency-dashboard"' not in second.content.decode()


def test_show_dashboard_and_dashboard_top(traffic, admin_client, monkeypatch):
    monkeypatch.setattr(IdempotencyKeyAdmin, "dashboard_top", 2)
    _, page = dashboard(admin_client)
    assert list(page.counts("scope").items()) == [("anonymous", "6"), ("billing", "4")]
    monkeypatch.setattr(IdempotencyKeyAdmin, "show_dashboard", False)
    response = admin_client.get(LIST)
    assert response.context["dashboard"] is None
    assert 'id="idempotency-dashboard"' not in response.content.decode()
    assert "mw-1" in response.content.decode()  # the list itself is still there


def test_staff_with_view_permission_see_the_dashboard(traffic):
    board, _ = dashboard(user_client("view_idempotencykey"))
    assert board["total"] == 15


def test_an_action_in_flight_is_counted_as_running(admin_client):
    seen: dict[str, Any] = {}

    def report() -> str:
        seen["during"], _ = dashboard(admin_client)
        return "sent"

    assert django_idempotency.run("report-1", report, scope="reports") == "sent"
    after, _ = dashboard(admin_client)
    during = seen["during"]
    assert dict(during["states"])["running"] == 1 and dict(during["states"])["done"] == 0
    assert dict(during["doors"])["run"] == 1
    assert dict(after["states"])["running"] == 0 and dict(after["states"])["done"] == 1


def test_records_without_a_door_count_as_unknown(redis_client, admin_client):
    django_idempotency.run("new", lambda: 1, scope="old-and-new")
    # As written before records carried their door.
    name = name_of(RUN, "old-and-new", "old")
    rid = base64.urlsafe_b64decode(name[name.rindex("{") + 1 : -1] + "==")
    record = Record(
        State.DONE, Kind.RUN, b"old-and-new", b"old", b"", now_ms(), now_ms(), None, b"1"
    )
    redis_client.set(name, get_engine().sealer.seal(rid, record), px=60_000)
    _, page = dashboard(admin_client)
    assert page.counts("door") == {
        "middleware": "0",
        "decorator": "0",
        "drf": "0",
        "run": "1",
        "celery": "0",
        "tasks": "0",
        "unknown": "1",
    }


def test_an_empty_store_gets_an_empty_dashboard(admin_client):
    board, page = dashboard(admin_client)
    assert board["total"] == 0 and board["scopes"] == []
    assert "0 records" in page.html
    assert [(b.attrs["data-count"], b.attrs["height"]) for b in page.bars()] == [("0", "0.0")] * 6
    assert set(page.counts("state").values()) == {"0"}


def test_encrypted_records_are_counted_by_their_decrypted_scope(
    settings, redis_client, admin_client
):
    key = base64.urlsafe_b64encode(bytes(range(32))).decode()
    settings.IDEMPOTENCY = {**settings.IDEMPOTENCY, "ENCRYPTION_KEYS": [key]}
    for i in range(3):
        django_idempotency.run(f"secret-{i}", lambda: "ok", scope="tenant-secret")
    assert all(b"tenant-secret" not in redis_client.get(k) for k in redis_client.keys("idem:*"))
    board, page = dashboard(admin_client)
    assert board["total"] == 3 and board["unreadable"] == 0
    assert list(page.counts("scope").items()) == [("tenant-secret", "3")]
    assert page.counts("door")["run"] == "3"


# -- a real browser ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.test_dashboard")
def test_staff_see_the_dashboard_in_headless_chromium(
    traffic, admin_user, styled_live_server: LiveServer, tmp_path: Path
):
    binary = chromium()
    url = f"{styled_live_server.url}/test-login/{admin_user.username}/?next={LIST}"

    dom = headless(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert 'id="idempotency-dashboard"' in dom.stdout, dom.stderr[-2000:]
    start = dom.stdout.index('id="idempotency-dashboard"')
    section = dom.stdout[start : dom.stdout.index("</section>", start)]
    assert "<script" not in section  # drawn by the server, not by JavaScript
    svg = re.search(r"<svg\b.*?</svg>", section, re.DOTALL)
    assert svg is not None
    assert '<title id="age-chart-title">Records by age</title>' in svg.group()
    page = Page(dom.stdout)
    assert [int(b.attrs["data-count"]) for b in page.bars()] == [7, 2, 1, 2, 1, 2]
    assert page.counts("state")["done"] == "13"
    assert page.counts("door")["run"] == "5"
    assert next(iter(page.counts("scope"))) == "anonymous"

    test_admin.screenshot(binary, tmp_path, url, "idempotency-dashboard.png", "1280,1000")
