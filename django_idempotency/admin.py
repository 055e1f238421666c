"""Staff-only "Idempotency keys" pages in the Django admin: list, detail, purge, dashboard.

Records stay in the store; :class:`~django_idempotency.models.IdempotencyKey` is an
unmanaged, table-less model that only gives the admin an entry and its permissions
(``view_idempotencykey`` to list and open records, ``delete_idempotencykey`` to purge).
What the pages list, show, count and purge is :mod:`django_idempotency.inventory`'s; this
module is the glue. A list page is whole scan batches (:meth:`Inventory.page`), so it costs
the same on a hundred keys or millions; the first page's dashboard is one more scan of
every record the filters select (``show_dashboard = False`` on a subclass turns it off).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import urlencode

from .conf import get_settings
from .engine import now_ms
from .inventory import Dashboard, Filters, Inventory, PurgeResult, Row
from .inventory.display import RUNNING_WHY, iso_ms, parse_duration, store_down
from .inventory.query import DOOR_NAMES, KIND_NAMES, STATE_NAMES, split_body
from .models import DurableRecord, IdempotencyKey
from .records import IntegrityError, Record
from .runtime import get_engine
from .stores.base import StoreError

logger = logging.getLogger("django_idempotency")

_RUNNING_WHY = RUNNING_WHY[0].upper() + RUNNING_WHY[1:] + "."
_FILTER_FIELDS = ("state", "kind", "door", "scope", "q", "older")


def _filters(data: QueryDict) -> tuple[Filters, dict[str, str], list[str]]:
    """Filters from request data, the values to echo back, and what is wrong with them."""
    values = {name: data.get(name, "").strip() for name in _FILTER_FIELDS}
    try:
        filters = Filters(
            states=frozenset([values["state"]] if values["state"] else []),
            kind=values["kind"] or None,
            door=values["door"] or None,
            scope=values["scope"] or None,
            search=values["q"] or None,
            older_than=parse_duration(values["older"]) if values["older"] else None,
        )
    except ValueError as exc:
        return Filters(), values, [str(exc)]
    return filters, values, []


@dataclass(frozen=True)
class Bar:
    """One bar of the age chart, in SVG user units."""

    label: str
    count: int
    x: float
    y: float
    height: float
    #: Where the bar's labels are centred.
    middle: float


@dataclass(frozen=True)
class Chart:
    """The age histogram as an inline SVG: geometry only, drawn by the template."""

    width: int
    height: int
    #: The y of the axis: bars stand on it, bucket labels hang below it.
    base: float
    bar_width: float
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
        x = round(i * slot + slot * 0.15, 2)
        bars.append(
            Bar(label, count, x, round(base - height, 2), height, round(x + slot * 0.35, 2))
        )
    return Chart(CHART_WIDTH, CHART_HEIGHT, base, round(slot * 0.7, 2), bars)


def dashboard_context(board: Dashboard, top: int, scope_url: str) -> dict[str, Any]:
    """What the dashboard template shows; ``scope_url`` + a query lists one scope."""
    stats = board.stats
    doors = [(d, stats.by_door.get(d, 0)) for d in DOOR_NAMES]
    if stats.by_door.get("unknown"):
        doors.append(("unknown", stats.by_door["unknown"]))
    return {
        "total": stats.total,
        "scanned": stats.scanned,
        "unreadable": stats.unreadable,
        "states": [(s, stats.by_state.get(s, 0)) for s in STATE_NAMES],
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
    _ModelAdmin = admin.ModelAdmin[Any]
else:  # ModelAdmin is generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin


class _ReadOnlyAdmin(_ModelAdmin):
    """What is stored is written by the doors and is the evidence of their work: staff
    may look at it and delete it, never add or change it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Nothing is added by hand."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nothing is changed by hand."""
        return False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(_ReadOnlyAdmin):
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

    def _back(self, request: HttpRequest, error: str | None = None) -> HttpResponse:
        """To the list, with ``error`` as a message."""
        if error is not None:
            messages.error(request, error)
        return HttpResponseRedirect(self._url("changelist"))

    def _render(
        self, request: HttpRequest, template: str, title: str, **extra: Any
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "has_delete_permission": self.has_delete_permission(request),
            "changelist_url": self._url("changelist"),
            "purge_url": self._url("purge"),
            "running_why": _RUNNING_WHY,
            **extra,
        }
        return TemplateResponse(request, f"admin/django_idempotency/{template}", context)

    # -- list ----------------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, str] | None = None
    ) -> HttpResponse:
        """Records matching the filters and search, one page of SCAN batches at a time."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        filters, values, errors = _filters(request.GET)
        cursor = request.GET.get("cursor") or None
        rows: list[Row] = []
        next_cursor: str | None = None
        dashboard = None
        if not errors:
            inventory = self.inventory()
            try:
                entries, next_cursor = inventory.page(
                    filters, cursor, size=100, max_scanned=self.max_scanned
                )
                now = now_ms()
                rows = [Row.of(e, now) for e in entries]
                if self.show_dashboard and cursor is None:
                    board = inventory.dashboard(filters, ttl_seconds=get_settings().TTL)
                    dashboard = dashboard_context(
                        board, self.dashboard_top, self._url("changelist")
                    )
            except ValueError as exc:  # a page cursor that is not one
                errors.append(str(exc))
            except StoreError as exc:
                errors.append(store_down(exc))
        query = {k: v for k, v in values.items() if v}
        return self._render(
            request,
            "key_list.html",
            "Idempotency keys",
            rows=rows,
            errors=errors,
            values=values,
            states=STATE_NAMES,
            kinds=KIND_NAMES,
            doors=DOOR_NAMES,
            filtered=bool(query),
            filter_query=urlencode(query),
            next_url=("?" + urlencode({**query, "cursor": next_cursor})) if next_cursor else None,
            first_page=cursor is None,
            dashboard=dashboard,
            **(extra_context or {}),
        )

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
            return self._back(request, store_down(exc))
        if detail is None:
            raise Http404("No such record: it may have expired or been purged.")
        now = now_ms()
        return self._render(
            request,
            "key_detail.html",
            f"Idempotency key {detail.entry.key}",
            detail=detail,
            row=Row.of(detail.entry, now),
            fields=detail.fields(now),
            preview=detail.preview(self.preview_bytes),
        )

    # -- purge ---------------------------------------------------------------------------

    def purge_view(self, request: HttpRequest) -> HttpResponse:
        """Ask for confirmation (first POST), then purge (POST with ``confirm``).

        Either the ``_selected`` record ids, or ``all_matching`` with the list's filters.
        """
        if not self.has_delete_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return self._back(request)
        filters, values, errors = _filters(request.POST)
        if errors:
            return self._back(request, errors[0])
        all_matching = request.POST.get("all_matching") == "1"
        ids = [i for i in request.POST.getlist("_selected") if i]
        if not all_matching and not ids:
            messages.warning(request, "Select the records to purge first.")
            return self._back(request)
        inventory = self.inventory()
        try:
            names = [inventory.name_of(i) for i in ids]
        except ValueError:
            raise Http404("Not a record id.") from None
        try:
            entries = [] if all_matching else inventory.entries(names)
            selection = filters if all_matching else entries
            if request.POST.get("confirm") == "yes":
                force = request.POST.get("force") == "1"
                self._report(request, inventory.purge(selection, force=force))
                return self._back(request)
            planned = inventory.purge(selection, dry_run=True)  # its page asks about running ones
        except StoreError as exc:
            return self._back(request, store_down(exc))
        now = now_ms()
        return self._render(
            request,
            "purge_confirmation.html",
            "Are you sure?",
            rows=[Row.of(e, now) for e in entries],
            ids=ids,
            all_matching=all_matching,
            values=values,
            described=", ".join(f"{k} = {v}" for k, v in values.items() if v) or "none",
            planned=planned,
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


def _shown(description: str, doc: str, value: Callable[[Record], object]) -> Any:
    """A read-only column showing ``value`` of the row's sealed record, as text."""

    def show(self: DurableRecordAdmin, obj: DurableRecord) -> str:
        try:
            # Verified like a Redis record; a row that does not verify says so instead.
            record = get_engine().sealer.open(bytes.fromhex(obj.rid), bytes(obj.record))
        except (IntegrityError, ValueError):
            return "(does not verify)"
        shown = value(record)
        if isinstance(shown, bytes):
            return shown.decode("utf-8", "replace")
        return "" if shown is None else str(shown)

    show.__doc__ = doc
    return admin.display(description=description)(show)


@admin.register(DurableRecord)
class DurableRecordAdmin(_ReadOnlyAdmin):
    """Durable mode's rows, written by the doors in the work's transaction, read-only:
    what each says, decoded with the process's keys (``delete_durablerecord`` deletes)."""

    list_display = ("rid", "scope", "key", "state", "status", "expires")
    search_fields = ("rid",)
    ordering = ("-expires_ms",)
    fields = ("rid", "scope", "key", "state", "status", "created", "expires", "payload")
    readonly_fields = fields

    scope = _shown("scope", "The scope, from the sealed record.", attrgetter("scope"))
    key = _shown("key", "The client's key, decrypted if need be.", attrgetter("key"))
    state = _shown("state", "done, error or unreplayable.", attrgetter("state"))
    status = _shown("status", "The HTTP status stored (empty for run()).", attrgetter("status"))
    created = _shown(
        "created", "When the work began, from the record.", lambda r: iso_ms(r.created_ms)
    )
    payload = _shown(
        "payload",
        "The first bytes of the stored body or value.",
        lambda r: split_body(r)[1][: IdempotencyKeyAdmin.preview_bytes],
    )

    @admin.display(description="expires", ordering="expires_ms")
    def expires(self, obj: DurableRecord) -> str:
        """When the row stops counting (UTC)."""
        return str(iso_ms(obj.expires_ms))
