"""Staff-only "Idempotency keys" pages in the Django admin: list, detail, purge.

Records stay in the store; :class:`~django_idempotency.models.IdempotencyKey` is an
unmanaged, table-less model that only gives the admin an entry and its permissions
(``view_idempotencykey`` to list and open records, ``delete_idempotencykey`` to purge).
Lists are pages of scan batches (:meth:`Inventory.page`), so a page costs the same on a
hundred keys or millions. Purging always goes through a confirmation page, and running
records are kept unless its "also running records" box is ticked. The first page's
dashboard (counts by state, door, age and the top scopes of the records the filters
select) is one more scan of the whole keyspace in bounded memory; set
``show_dashboard = False`` on a subclass where that costs too much.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import urlencode

from .conf import get_settings
from .engine import now_ms
from .events import Door
from .inventory import (
    RUNNING_WHY,
    Dashboard,
    Detail,
    Entry,
    Filters,
    Inventory,
    PurgeResult,
    human_duration,
    iso_ms,
    parse_duration,
)
from .models import DurableRecord, IdempotencyKey
from .records import STATES, IntegrityError, Kind, State, decode_http
from .runtime import get_engine
from .stores.base import StoreError

logger = logging.getLogger("django_idempotency")

_RUNNING_WHY = RUNNING_WHY[0].upper() + RUNNING_WHY[1:] + "."
_STATES = [s.value for s in STATES]
_KINDS = sorted(k.value for k in Kind)
# The edge only reads records: none is ever written through it.
_DOORS = [d.value for d in Door if d is not Door.EDGE]
_FILTER_FIELDS = ("state", "kind", "door", "scope", "q", "older")
_STORE_DOWN = "Redis is unreachable or failed: {}"


@dataclass(frozen=True)
class Row:
    """One record as the templates show it."""

    id: str
    state: str
    status: int | None
    age: str
    ttl: str
    size: int
    kind: str
    door: str
    scope: str
    key: str
    running: bool

    @classmethod
    def of(cls, entry: Entry, now: int) -> Row:
        """Format ``entry`` for display at time ``now`` (epoch ms)."""
        return cls(
            id=entry.record_id,
            state=entry.shown_state,
            status=entry.status,
            age=human_duration(entry.age_ms(now)),
            ttl=human_duration(entry.ttl_ms),
            size=entry.size,
            kind=entry.kind.value,
            door="-" if entry.door is None else entry.door.value,
            scope=entry.scope,
            key=entry.key,
            running=entry.state is State.RUNNING,
        )


def _filters(data: QueryDict) -> tuple[Filters, dict[str, str], list[str]]:
    """Filters from request data, the values to echo back, and any errors."""
    values = {name: data.get(name, "").strip() for name in _FILTER_FIELDS}
    errors: list[str] = []
    older: float | None = None
    if values["older"]:
        try:
            older = parse_duration(values["older"])
        except ValueError as exc:
            errors.append(str(exc))
    for name, known in (("state", _STATES), ("kind", _KINDS), ("door", _DOORS)):
        if values[name] not in known:
            values[name] = ""  # a value no record can have: no filter
    filters = Filters(
        states=frozenset([values["state"]]) if values["state"] else frozenset(),
        kind=values["kind"] or None,
        door=values["door"] or None,
        scope=values["scope"] or None,
        search=values["q"] or None,
        older_than=older,
    )
    return filters, values, errors


@dataclass(frozen=True)
class Bar:
    """One bar of the age chart, in SVG user units."""

    label: str
    count: int
    x: float
    y: float
    width: float
    height: float
    #: Where the bar's labels are centred.
    middle: float
    #: The baseline of the count written above the bar.
    count_y: float


@dataclass(frozen=True)
class Chart:
    """The age histogram as an inline SVG: geometry only, drawn by the template."""

    width: int
    height: int
    #: The y of the axis: bars stand on it, bucket labels hang below it.
    base: float
    bars: list[Bar]

    @property
    def label_y(self) -> float:
        """The baseline of the bucket labels, under the axis."""
        return self.height - 8

    @property
    def description(self) -> str:
        """Every bar as text, for screen readers (``<desc>``)."""
        return "; ".join(f"{b.label}: {b.count}" for b in self.bars)


#: The chart's size, and room above the bars (counts) and below them (bucket labels).
CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM = 480, 170, 20, 26


def age_chart(labels: list[str], counts: list[int]) -> Chart:
    """Bars scaled to the largest count; a non-empty bucket is at least 1 unit tall."""
    room = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    base = CHART_HEIGHT - CHART_BOTTOM
    slot = CHART_WIDTH / max(len(counts), 1)
    largest = max(counts, default=0) or 1
    bars = []
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        height = round(max(room * count / largest, 1.0 if count else 0.0), 2)
        x, width = round(i * slot + slot * 0.15, 2), round(slot * 0.7, 2)
        y = round(base - height, 2)
        bars.append(
            Bar(label, count, x, y, width, height, round(x + width / 2, 2), round(y - 5, 2))
        )
    return Chart(CHART_WIDTH, CHART_HEIGHT, base, bars)


def dashboard_context(board: Dashboard, top: int, scope_url: str) -> dict[str, Any]:
    """What the dashboard template shows; ``scope_url`` + a query lists one scope."""
    stats = board.stats
    doors = [(d, stats.by_door.get(d, 0)) for d in _DOORS]
    if stats.by_door.get("unknown"):
        doors.append(("unknown", stats.by_door["unknown"]))
    return {
        "total": stats.total,
        "scanned": stats.scanned,
        "unreadable": stats.unreadable,
        "states": [(s, stats.by_state.get(s, 0)) for s in _STATES],
        "doors": doors,
        "chart": age_chart([b.label for b in board.buckets], board.by_age),
        "scopes": [
            (scope, count, scope_url + "?" + urlencode({"scope": scope}))
            for scope, count in board.scopes.top(top)
        ],
        "scopes_exact": board.scopes.exact,
        "scopes_undercount": board.scopes.undercount,
    }


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[IdempotencyKey]
else:  # ModelAdmin is generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(_ModelAdmin):
    """List, inspect and purge the records in Redis; nothing here touches the database."""

    #: Records asked of Redis per SCAN round trip; a page holds whole batches.
    scan_count = 200
    #: A page with narrow filters stops after scanning this many keys (then "Next").
    max_scanned = 20_000
    #: Body bytes shown on the detail page.
    preview_bytes = 4096
    #: Whether the list's first page shows the dashboard (one scan of every record).
    show_dashboard = True
    #: How many scopes the dashboard ranks.
    dashboard_top = 10

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Records are created by requests, never by hand."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Stored responses are evidence: read-only."""
        return False

    def inventory(self) -> Inventory:
        """The Redis-side view of the records."""
        return Inventory(get_engine(), count=self.scan_count)

    def get_urls(self) -> list[URLPattern]:
        """Our own list, detail and purge views instead of the ORM-backed ones."""
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name="{}_{}_changelist".format(*info)),
            path("purge/", wrap(self.purge_view), name="{}_{}_purge".format(*info)),
            path("<str:record_id>/", wrap(self.record_view), name="{}_{}_record".format(*info)),
        ]

    def _url(self, name: str, *args: str) -> str:
        return reverse(
            f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{name}",
            args=args,
        )

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "has_delete_permission": self.has_delete_permission(request),
            "changelist_url": self._url("changelist"),
            "purge_url": self._url("purge"),
            **extra,
        }

    # -- list ----------------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, str] | None = None
    ) -> HttpResponse:
        """Records matching the filters and search, one page of SCAN batches at a time."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        filters, values, errors = _filters(request.GET)
        rows: list[Row] = []
        next_cursor: str | None = None
        if not errors:
            try:
                entries, next_cursor = self.inventory().page(
                    filters,
                    request.GET.get("cursor") or None,
                    size=100,
                    max_scanned=self.max_scanned,
                )
                now = now_ms()
                rows = [Row.of(e, now) for e in entries]
            except ValueError as exc:
                errors.append(str(exc))
            except StoreError as exc:
                errors.append(_STORE_DOWN.format(exc))
        first_page = not request.GET.get("cursor")
        dashboard = None
        if self.show_dashboard and first_page and not errors:
            dashboard = self._dashboard(filters, errors)
        query = {k: v for k, v in values.items() if v}
        context = self._context(
            request,
            "Idempotency keys",
            rows=rows,
            errors=errors,
            values=values,
            states=_STATES,
            kinds=_KINDS,
            doors=_DOORS,
            filtered=bool(query),
            filter_query=urlencode(query),
            next_url=("?" + urlencode({**query, "cursor": next_cursor})) if next_cursor else None,
            first_page=first_page,
            dashboard=dashboard,
            running_why=_RUNNING_WHY,
            **(extra_context or {}),
        )
        return TemplateResponse(request, "admin/django_idempotency/key_list.html", context)

    def _dashboard(self, filters: Filters, errors: list[str]) -> dict[str, Any] | None:
        """The dashboard's context, or ``None`` (and an error) when Redis fails."""
        try:
            board = self.inventory().dashboard(filters, ttl_seconds=get_settings().TTL)
        except StoreError as exc:
            errors.append(_STORE_DOWN.format(exc))
            return None
        return dashboard_context(board, self.dashboard_top, self._url("changelist"))

    # -- detail --------------------------------------------------------------------------

    def record_view(self, request: HttpRequest, record_id: str) -> HttpResponse:
        """One whole record: header fields, lease, stored headers and a body preview."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        inventory = self.inventory()
        try:
            detail = inventory.get(inventory.name_of(record_id))
        except ValueError:
            raise Http404("Not a record id.") from None
        except StoreError as exc:
            messages.error(request, _STORE_DOWN.format(exc))
            return HttpResponseRedirect(self._url("changelist"))
        if detail is None:
            raise Http404("No such record: it may have expired or been purged.")
        return TemplateResponse(
            request,
            "admin/django_idempotency/key_detail.html",
            self._context(request, f"Idempotency key {detail.entry.key}", **self._detail(detail)),
        )

    def _detail(self, detail: Detail) -> dict[str, Any]:
        entry, now = detail.entry, now_ms()
        return {
            "row": Row.of(entry, now),
            "entry": entry,
            "fingerprint": entry.fingerprint,
            "verified": detail.verified,
            "problem": detail.problem,
            "created_at": iso_ms(entry.created_ms),
            "finished_at": iso_ms(entry.finished_ms),
            "lease": human_duration(entry.lease_ms) if entry.state is State.RUNNING else "",
            "headers": detail.headers,
            "body_label": "Body" if detail.headers is not None else "Payload",
            "body_size": len(detail.body),
            "body_text": detail.body_text(self.preview_bytes),
            "body_hex": detail.body[:256].hex(" "),
            "body_truncated": len(detail.body) > self.preview_bytes,
            "running_why": _RUNNING_WHY,
        }

    # -- purge ---------------------------------------------------------------------------

    def purge_view(self, request: HttpRequest) -> HttpResponse:
        """Ask for confirmation (first POST), then purge (POST with ``confirm``).

        Either the ``_selected`` record ids, or ``all_matching`` with the list's filters.
        """
        if not self.has_delete_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseRedirect(self._url("changelist"))
        inventory = self.inventory()
        force = request.POST.get("force") == "1"
        all_matching = request.POST.get("all_matching") == "1"
        filters, values, errors = _filters(request.POST)
        if errors:
            for error in errors:
                messages.error(request, error)
            return HttpResponseRedirect(self._url("changelist"))
        try:
            ids = [i for i in request.POST.getlist("_selected") if i]
            keys = [inventory.name_of(i) for i in ids]
        except ValueError:
            raise Http404("Not a record id.") from None
        if not all_matching and not keys:
            messages.warning(request, "Select the records to purge first.")
            return HttpResponseRedirect(self._url("changelist"))

        def purge(force: bool, dry_run: bool) -> PurgeResult:
            if all_matching:
                return inventory.purge(filters, force=force, dry_run=dry_run)
            return inventory.purge_entries(entries, force=force, dry_run=dry_run)

        try:
            entries = [] if all_matching else inventory.entries(keys)
            if request.POST.get("confirm") == "yes":
                self._report(request, purge(force, dry_run=False))
                return HttpResponseRedirect(self._url("changelist"))
            planned = purge(False, dry_run=True)  # its page asks about running ones
        except StoreError as exc:
            messages.error(request, _STORE_DOWN.format(exc))
            return HttpResponseRedirect(self._url("changelist"))
        now = now_ms()
        context = self._context(
            request,
            "Are you sure?",
            rows=[Row.of(e, now) for e in entries],
            ids=ids,
            all_matching=all_matching,
            values=values,
            described=", ".join(f"{k} = {v}" for k, v in values.items() if v) or "none",
            matched=planned.matched,
            deletable=planned.deleted,
            running=planned.skipped_running,
            running_why=_RUNNING_WHY,
        )
        return TemplateResponse(
            request, "admin/django_idempotency/purge_confirmation.html", context
        )

    def _report(self, request: HttpRequest, result: PurgeResult) -> None:
        logger.info(
            "admin purge by %s: %d idempotency record(s) deleted",
            request.user.get_username(),
            result.deleted,
        )
        messages.success(request, f"Purged {result.deleted} idempotency key(s).")
        if result.skipped_running:
            messages.warning(
                request,
                f"Kept {result.skipped_running} running record(s). {_RUNNING_WHY}",
            )
        if result.changed:
            messages.warning(
                request,
                f"Left {result.changed} record(s) alone: they changed or expired meanwhile.",
            )


def _record_field(name: str, doc: str) -> Any:
    """A read-only column showing the sealed record's ``name`` (as text)."""

    def show(self: DurableRecordAdmin, obj: DurableRecord) -> str:
        record = self._opened(obj)
        if record is None:
            return "(does not verify)"
        value = getattr(record, name)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return "" if value is None else str(value)

    show.__doc__ = doc
    return admin.display(description=name)(show)


@admin.register(DurableRecord)
class DurableRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg,unused-ignore]
    """Durable mode's rows, read-only: what each says, decoded with the process's keys.

    Rows are written by the doors in the work's transaction; staff may look at them and
    delete them (``delete_durablerecord``), never add or change one.
    """

    list_display = ("rid", "scope", "key", "state", "status", "expires")
    search_fields = ("rid",)
    ordering = ("-expires_ms",)
    fields = ("rid", "scope", "key", "state", "status", "created", "expires", "payload")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Rows are written by the doors only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A row is the evidence of committed work: read-only."""
        return False

    @staticmethod
    def _opened(obj: DurableRecord) -> Any:
        # Verified like a Redis record; a row that does not verify says so instead.
        try:
            return get_engine().sealer.open(bytes.fromhex(obj.rid), bytes(obj.record))
        except (IntegrityError, ValueError):
            return None

    scope = _record_field("scope", "The scope, decoded from the sealed record.")
    key = _record_field("key", "The client's key, decoded (and decrypted) from the sealed record.")
    state = _record_field("state", "done, error or unreplayable.")
    status = _record_field("status", "The HTTP status stored (empty for run() records).")

    @admin.display(description="created")
    def created(self, obj: DurableRecord) -> str:
        """When the work began, from the record."""
        record = self._opened(obj)
        return "" if record is None else str(iso_ms(record.created_ms))

    @admin.display(description="expires", ordering="expires_ms")
    def expires(self, obj: DurableRecord) -> str:
        """When the row stops counting (UTC)."""
        return str(iso_ms(obj.expires_ms))

    @admin.display(description="payload")
    def payload(self, obj: DurableRecord) -> str:
        """The first bytes of the stored body or value."""
        record = self._opened(obj)
        if record is None:
            return "(does not verify)"
        body = record.payload
        if record.kind is Kind.HTTP and record.state is State.DONE:
            body = decode_http(body)[1]
        return bytes(body[: IdempotencyKeyAdmin.preview_bytes]).decode("utf-8", "replace")
