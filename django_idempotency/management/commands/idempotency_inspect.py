"""``manage.py idempotency_inspect``: list, show, count and purge stored records.

Subcommands ``list``, ``show``, ``stats`` and ``purge``; the parsers below are their
reference (``--help``, and the docs' commands page is built from them). What they select,
print and purge is :mod:`django_idempotency.inventory`'s; this module is the glue. Exit
codes: 0 done; 1 unknown key, or options that do not go together; 2 usage error
(argparse); 3 Redis unreachable or failing.
"""

from __future__ import annotations

import itertools
import json
import time
from argparse import ArgumentParser, ArgumentTypeError
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...engine import now_ms
from ...inventory import (
    MEMORY_SAMPLE,
    SCAN_COUNT,
    Detail,
    Entry,
    Filters,
    Inventory,
    Progress,
    PurgeResult,
    Row,
)
from ...inventory.display import RUNNING_WHY, human_bytes, parse_duration, printable, store_down
from ...inventory.query import DOOR_NAMES, KIND_NAMES, STATE_NAMES
from ...runtime import get_engine
from ...stores.base import StoreError

_COLUMNS = "{state:<12} {status:>6} {age:>8} {ttl:>8} {size:>8}  {kind:<4}  {scope:<16} {key}"
_HEADER = _COLUMNS.format(
    state="STATE", status="STATUS", age="AGE", ttl="TTL", size="SIZE", kind="KIND",
    scope="SCOPE", key="KEY",
)  # fmt: skip


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


class Command(BaseCommand):
    """List, show, count and purge idempotency records."""

    help = (
        "List, show, count and purge the idempotency records stored in Redis "
        "(SCAN-based, bounded memory). See the subcommands' --help."
    )
    #: Seconds a scan must have run before progress appears on a terminal's stderr.
    progress_after = 2.0

    def add_arguments(self, parser: ArgumentParser) -> None:
        """The four subcommands and their options."""
        sub = parser.add_subparsers(dest="subcommand", metavar="{list,show,stats,purge}")
        sub.required = True

        p = sub.add_parser("list", help="List records: scope, key, state, status, age, TTL, size.")
        self._add_filters(p)
        p.add_argument("--limit", type=_positive, help="Stop after this many records.")
        p.add_argument("--json", action="store_true", help="Print a JSON array.")

        p = sub.add_parser("show", help="Show one record whole (looked up by the client's key).")
        p.add_argument("key", help="The client's idempotency key (or run() key).")
        p.add_argument(
            "--scope",
            help="The scope (user:<pk>, anonymous, a run() call's scope, celery:<task>). "
            "Without it every scope is searched with a SCAN.",
        )
        p.add_argument("--kind", choices=KIND_NAMES, help="http or run() records (default: both).")
        p.add_argument(
            "--body-bytes", type=_positive, default=2048, help="Body preview size (2048)."
        )
        p.add_argument("--json", action="store_true", help="Print a JSON array of records.")

        p = sub.add_parser(
            "stats", help="Exact counts by state and kind, compression, sampled memory use."
        )
        self._add_filters(p)
        p.add_argument(
            "--sample",
            type=_positive,
            default=MEMORY_SAMPLE,
            help="How many records MEMORY USAGE is asked about (1000).",
        )
        p.add_argument("--json", action="store_true", help="Print a JSON object.")
        p.add_argument(
            "--rows",
            action="store_true",
            help="Durable mode: also count the rows kept in the database (total, expired).",
        )

        p = sub.add_parser("purge", help="Delete records: by KEY, --all, or filters.")
        p.add_argument("keys", nargs="*", metavar="KEY", help="Client keys to delete.")
        p.add_argument(
            "--all", action="store_true", help="Every record (not running ones without --force)."
        )
        p.add_argument(
            "--expired-rows",
            action="store_true",
            help="Durable mode: delete the database rows past their TTL (Redis untouched).",
        )
        self._add_filters(p)
        p.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")
        p.add_argument(
            "--yes",
            "--no-input",
            "--noinput",
            dest="interactive",
            action="store_false",
            help="Do not ask for confirmation.",
        )
        p.add_argument(
            "--force",
            action="store_true",
            help=f"Also delete running records ({RUNNING_WHY}).",
        )

    def _add_filters(self, p: ArgumentParser) -> None:
        p.add_argument(
            "--state", action="append", choices=STATE_NAMES, help="Only this state (repeatable)."
        )
        p.add_argument("--scope", help="Only this scope (exact), e.g. user:42 or anonymous.")
        p.add_argument("--key-glob", help="Only keys matching this glob, e.g. 'order-*'.")
        p.add_argument("--kind", choices=KIND_NAMES, help="Only http or run() records.")
        p.add_argument(
            "--door", choices=DOOR_NAMES, help="Only records that came through this door."
        )
        p.add_argument(
            "--older-than", type=_duration, help="Only records created longer ago (90s, 1h, 2d)."
        )
        p.add_argument(
            "--scan-count",
            type=_positive,
            default=SCAN_COUNT,
            help="SCAN COUNT per round trip (1000).",
        )

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the subcommand; Redis failures become a one-line error, exit code 3."""
        self._progress_shown = False
        inventory = Inventory(get_engine(), count=options.get("scan_count") or SCAN_COUNT)
        handler: Callable[[Inventory, dict[str, Any]], None] = getattr(
            self, "_" + options["subcommand"]
        )
        try:
            handler(inventory, options)
        except StoreError as exc:
            self._end_progress()
            raise CommandError(store_down(exc), returncode=3) from None

    @staticmethod
    def _filters(options: dict[str, Any]) -> Filters:
        return Filters(
            states=frozenset(options.get("state") or ()),
            kind=options.get("kind"),
            door=options.get("door"),
            scope=options.get("scope"),
            key_glob=options.get("key_glob"),
            older_than=options.get("older_than"),
        )

    # -- progress ------------------------------------------------------------------------

    def _progress(self) -> Progress | None:
        """A progress reporter for long scans, when stderr is a terminal."""
        if not self.stderr.isatty():
            return None
        started, last = time.monotonic(), 0.0

        def report(scanned: int, matched: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - started >= self.progress_after and now - last >= 0.25:
                last, self._progress_shown = now, True
                self._err(f"\r\033[Kscanned {scanned:,} keys, {matched:,} matching")

        return report

    def _end_progress(self) -> None:
        """Clear the progress line: it shares the terminal with what is printed next."""
        if self._progress_shown:
            self._progress_shown = False
            self._err("\r\033[K")

    def _err(self, text: str) -> None:
        self.stderr.write(text, style_func=str, ending="")
        self.stderr.flush()

    # -- list ----------------------------------------------------------------------------

    def _list(self, inventory: Inventory, options: dict[str, Any]) -> None:
        scan = inventory.scan(self._filters(options), self._progress())
        entries = itertools.islice(scan, options["limit"])
        now = now_ms()
        write = self.stdout.write
        if options["json"]:
            # A JSON array, written as it streams: never the whole list in memory.
            sep = "[\n"
            for entry in entries:
                self._end_progress()
                write(sep + json.dumps(entry.as_dict(now)), ending="")
                sep = ",\n"
            self._end_progress()
            write("[]" if sep == "[\n" else "\n]")
            return
        shown = 0
        lines: list[str] = [_HEADER]
        for entry in entries:
            self._end_progress()
            shown += 1
            lines.append(_COLUMNS.format_map(vars(Row.of(entry, now))))
            # One write per thousand lines: a write per line costs more than the scan.
            if len(lines) >= 1000:
                write("\n".join(lines))
                lines = []
        self._end_progress()
        if not shown:
            write("No matching records.")
        elif lines:
            write("\n".join(lines))

    # -- show ----------------------------------------------------------------------------

    @staticmethod
    def _not_found(key: str, scope: str | None) -> str:
        where = "in any scope" if scope is None else f"in scope {scope!r}"
        return f"No idempotency record for key {key!r} {where}."

    def _show(self, inventory: Inventory, options: dict[str, Any]) -> None:
        key, scope, preview = options["key"], options.get("scope"), options["body_bytes"]
        details = list(inventory.find(key, scope, options.get("kind")))
        if not details:
            raise CommandError(self._not_found(key, scope), returncode=1)
        now = now_ms()
        if options["json"]:
            docs = [detail.as_dict(now, preview) for detail in details]
            self.stdout.write(json.dumps(docs, indent=2))
            return
        shown = ["\n".join(self._lines(detail, now, preview)) for detail in details]
        self.stdout.write("\n\n".join(shown))

    @staticmethod
    def _lines(detail: Detail, now: int, preview: int) -> list[str]:
        lines = [f"{label + ':':<13}{value}" for label, value in detail.fields(now)]
        if detail.headers is not None:
            lines.append("headers:")
            lines += [f"  {name}: {printable(value)}" for name, value in detail.headers]
        if detail.body_label is not None:
            lines.append(f"{detail.body_label} ({len(detail.body)} bytes):")
            lines += ["  " + line for line in detail.preview(preview).splitlines() or [""]]
        return lines

    # -- stats ---------------------------------------------------------------------------

    def _stats(self, inventory: Inventory, options: dict[str, Any]) -> None:
        stats = inventory.stats(
            self._filters(options), sample=options["sample"], progress=self._progress()
        )
        self._end_progress()
        # Only when asked: a project that uses Redis alone may not have migrated the table.
        rows = _durable_rows() if options["rows"] else None
        if options["json"]:
            extra = {"durable_rows": rows} if options["rows"] else {}
            self.stdout.write(json.dumps({**stats.as_dict(), **extra}, indent=2))
            return
        write = self.stdout.write
        write(f"records: {stats.total:,} (of {stats.scanned:,} keys scanned)")
        for state, count in stats.by_state.items():
            write(f"  {state:<14}{count:>12,}")
        write("by kind: " + ", ".join(f"{d} {n:,}" for d, n in stats.by_kind.items()))
        write("by door: " + ", ".join(f"{d} {n:,}" for d, n in stats.by_door.items()))
        write(f"stored bytes: {stats.stored_bytes:,} ({human_bytes(stats.stored_bytes)})")
        if stats.compression_ratio is not None:
            write(
                f"compression: {stats.compressed:,} record(s) compressed, payloads stored in "
                f"{stats.compression_ratio:.2f} of their size"
            )
        if stats.encrypted:
            write(f"encrypted: {stats.encrypted:,} record(s)")
        if stats.memory_sampled:
            write(
                f"memory: about {human_bytes(stats.memory_estimate)} "
                f"(MEMORY USAGE of {stats.memory_sampled:,} records: "
                f"{human_bytes(stats.memory_average)} each on average)"
            )
        if stats.unreadable:
            write(f"unreadable keys under the prefix: {stats.unreadable:,}")
        if rows is not None:
            write(f"durable rows (database): {rows['total']:,}, {rows['expired']:,} expired")

    # -- purge ---------------------------------------------------------------------------

    def _purge(self, inventory: Inventory, options: dict[str, Any]) -> None:
        if options.get("expired_rows"):
            # Expired rows are dead by definition (reads skip them): no confirmation.
            from ...stores.database import DatabaseRows

            count = DatabaseRows().purge(dry_run=options["dry_run"])
            verb = "Would delete" if options["dry_run"] else "Deleted"
            self.stdout.write(f"{verb} {count} expired durable row(s).")
            return
        keys: list[str] = options["keys"]
        filters = self._filters(options)
        force, dry_run = options["force"], options["dry_run"]
        # With KEYs, --scope and --kind say where to look them up; other filters do not mix.
        key_lookup = Filters(scope=filters.scope, kind=filters.kind)
        if keys and (options["all"] or filters != key_lookup):
            raise CommandError("Give KEYs, or --all, or filters: not several of them.")
        if options["all"] and not filters.selects_everything:
            raise CommandError("--all cannot be combined with filters.")
        if not keys and not options["all"] and filters.selects_everything:
            raise CommandError(
                "Say what to purge: KEY..., --all, or filters "
                "(--state, --scope, --key-glob, --kind, --door, --older-than)."
            )
        if filters.states == {"running"} and not force:
            raise CommandError(f"Purging running records needs --force: {RUNNING_WHY}.")

        missing: list[str] = []
        entries: list[Entry] = []
        for key in keys:
            found = [d.entry for d in inventory.find(key, filters.scope, filters.kind)]
            if not found:
                missing.append(key)
                self.stderr.write(self._not_found(key, filters.scope))
            entries += found
        selection = entries if keys else filters

        def purge(dry_run: bool) -> PurgeResult:
            result = inventory.purge(
                selection, force=force, dry_run=dry_run, progress=self._progress()
            )
            self._end_progress()
            return result

        if dry_run or options["interactive"]:
            planned = purge(dry_run=True)
            self._report_running(planned, force)
            if dry_run or not planned.deleted:
                said = f"Would delete {planned.deleted:,} record(s)." if dry_run else None
                self.stdout.write(said or "Nothing to purge.")
                self._fail_on_missing(missing)
                return
            if not self._confirm(planned.deleted):
                self.stdout.write("Purge cancelled.")
                return
        result = purge(dry_run=False)
        if not options["interactive"]:
            self._report_running(result, force)
        self.stdout.write(f"Deleted {result.deleted:,} record(s).")
        if result.changed:
            self.stdout.write(
                f"Left {result.changed:,} record(s) alone: they changed or expired while "
                "being purged."
            )
        self._fail_on_missing(missing)

    def _report_running(self, result: PurgeResult, force: bool) -> None:
        if result.skipped_running:
            self.stderr.write(
                f"Keeping {result.skipped_running:,} running record(s): {RUNNING_WHY}. "
                "Pass --force to purge them anyway."
            )
        elif force:
            self.stderr.write(f"--force: running records are purged too; {RUNNING_WHY}.")

    def _confirm(self, count: int) -> bool:
        try:
            answer = input(
                f"This will delete {count:,} idempotency record(s) from Redis.\n"
                "Type 'yes' to continue, or 'no' to cancel: "
            )
        except EOFError:
            return False
        return answer.strip().lower() == "yes"

    @staticmethod
    def _fail_on_missing(missing: list[str]) -> None:
        if missing:
            raise CommandError(f"{len(missing)} key(s) not found.", returncode=1)


def _durable_rows() -> dict[str, int] | None:
    """Durable mode's rows in the database: total and expired (``None``: no table yet)."""
    from django.db import DatabaseError

    from ...stores.database import DatabaseRows

    rows = DatabaseRows()
    try:
        return {"total": rows.count(), "expired": rows.count(expired=True)}
    except DatabaseError:  # the app's migrations have not run on this database
        return None
