"""Reference pages written from the code, so they cannot drift from it.

Directives (usable from MyST pages as ```` ```{idempotency-settings} ````):

- ``idempotency-settings``: every row of the settings table
  (``django_idempotency.conf.SETTINGS``), one section per setting whose anchor is the
  setting's name (``settings.html#LOCK_TTL``), and the whole table as a settings dict.
- ``idempotency-options``: every per-door option (``django_idempotency.options.SPECS``);
  anchors are the option names.
- ``idempotency-problems``: one section per problem type, from the ``type_slug`` of every
  ``IdempotencyError`` subclass; anchors are exactly the slugs, which the problem ``type``
  URIs point at.
- ``idempotency-checks``: every system check id: ``E100`` for the settings' shape,
  ``E1NN`` per setting, and the ids the other checks' docstrings open with
  (``"E002: ..."``, ``"W001: ...; W002: ..."``); anchors are the ids (``E002``).
- ``idempotency-command``: a management command's subcommands and options, read from its
  own argparse parser. Argument: the command's name.
- ``idempotency-outcomes``: every outcome with the signal it sends and its log level, from
  ``django_idempotency.events``.

Settings and problem types are objects of the standard domain, so any page can link to
one with ``{setting}`TTL``` or ``{problem}`in-progress```; an unknown name fails the
build (``nitpicky`` is on for them).
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

if TYPE_CHECKING:
    from django_idempotency.exceptions import IdempotencyError

_CHECK_PREFIX = "django_idempotency."
_DOC_CHECK = re.compile(r"\b([EW]\d{3}):\s*([^;]+)")


# -- node helpers ---------------------------------------------------------------------------


def _para(*parts: nodes.Node | str) -> nodes.paragraph:
    para = nodes.paragraph()
    for part in parts:
        para += nodes.Text(part) if isinstance(part, str) else part
    return para


def _code(text: str) -> nodes.literal:
    return nodes.literal(text=text)


def _section(anchor: str, title: nodes.Node | str) -> nodes.section:
    section = nodes.section(ids=[anchor], names=[nodes.fully_normalize_name(anchor)])
    heading = nodes.title()
    heading += nodes.Text(title) if isinstance(title, str) else title
    section += heading
    return section


def _xref(role: str, target: str, label: nodes.Node) -> pending_xref:
    ref: pending_xref = pending_xref(
        "", refdomain="std", reftype=role, reftarget=target, refexplicit=True, refwarn=True
    )
    ref += label
    return ref


def _table(headers: list[str], rows: Iterable[list[nodes.Node | str]]) -> nodes.table:
    rows = list(rows)
    table = nodes.table()
    group = nodes.tgroup(cols=len(headers))
    table += group
    for _ in headers:
        group += nodes.colspec(colwidth=30)
    head = nodes.thead()
    group += head
    head += _row(list(headers))
    body = nodes.tbody()
    group += body
    for row in rows:
        body += _row(row)
    return table


def _row(cells: list[nodes.Node | str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += cell if isinstance(cell, nodes.paragraph) else _para(cell)
        row += entry
    return row


def _doc(obj: Any) -> list[nodes.Node]:
    """An object's docstring as paragraphs of plain text (double backticks become code)."""
    text = inspect.getdoc(obj) or ""
    return [_inline(block) for block in text.split("\n\n") if block.strip()]


def _inline(text: str) -> nodes.paragraph:
    """Plain text in which ``...`` spans are code, the markup docstrings here use."""
    para = nodes.paragraph()
    for i, piece in enumerate(re.split(r"``(.+?)``", " ".join(text.split()))):
        if piece:
            para += _code(piece) if i % 2 else nodes.Text(piece)
    return para


class _Directive(SphinxDirective):
    has_content = False

    def section(self, anchor: str, title: str) -> nodes.section:
        """A section titled ``title`` (as code) at ``anchor``, linkable as ``page.md#anchor``."""
        std: Any = self.env.get_domain("std")
        label = f"idempotency-{self.env.docname}-{anchor}".lower()
        std.anonlabels[label] = (self.env.docname, anchor)
        std.labels[label] = (self.env.docname, anchor, title)
        return _section(anchor, _code(title))

    def note(self, objtype: str, name: str, anchor: str) -> None:
        """Make ``name`` a target of the ``{objtype}`` role, on this page at ``anchor``."""
        std: Any = self.env.get_domain("std")
        std.note_object(objtype, name, anchor, location=self.get_location())


# -- settings -------------------------------------------------------------------------------


class SettingsDirective(_Directive):
    """Every setting of ``settings.IDEMPOTENCY``, from the settings table."""

    def run(self) -> list[nodes.Node]:
        from django_idempotency.conf import DEFAULTS, SETTINGS, SHAPE_CHECK, check_id

        out: list[nodes.Node] = []
        summary = _table(
            ["Setting", "Meaning", "Check"],
            (
                [
                    _xref("setting", f.name, _code(f.name)),
                    _inline(f.metadata["doc"]),
                    _code(check_id(f.name).removeprefix(_CHECK_PREFIX)),
                ]
                for f in SETTINGS
            ),
        )
        out.append(summary)
        out.append(
            _para(
                "Every key with its default, as a settings dict (unknown keys are reported as ",
                _code(SHAPE_CHECK),
                " with the closest known name):",
            )
        )
        lines = ["IDEMPOTENCY = {"]
        lines += [f"    {name!r}: {default!r}," for name, default in DEFAULTS.items()]
        lines.append("}")
        text = "\n".join(lines).replace("'", '"')
        block = nodes.literal_block(text, text, language="python")
        out.append(block)
        for f in SETTINGS:
            section = self.section(f.name, f.name)
            section += _inline(f.metadata["doc"])
            section += _table(
                ["Default", "Validated into", "Bad value reported as"],
                [[_code(repr(f.metadata["default"])), _code(str(f.type)), _code(check_id(f.name))]],
            )
            section += _para("Accepted values: ", *_inline(_validator_doc(f)).children)
            self.note("setting", f.name, f.name)
            out.append(section)
        return out


def _validator_doc(f: Any) -> str:
    validate = f.metadata["validate"]
    doc = inspect.getdoc(validate) or ""
    first = doc.split("\n\n")[0].strip()
    return first or "see above."


# -- per-door options ---------------------------------------------------------------------


_KIND_DOORS = {
    "http": "@idempotent_view(...), IdempotentMixin.idempotency_options",
    "run": "run(), arun(), Celery idempotency_<name> attributes, Django Tasks @idempotent(...)",
}


class OptionsDirective(_Directive):
    """Every per-view and per-call option, from the options model."""

    def run(self) -> list[nodes.Node]:
        from django_idempotency.options import SPECS

        out: list[nodes.Node] = [
            _table(
                ["Option", "Doors", "Default"],
                (
                    [
                        _code(name),
                        ", ".join(sorted(spec.kinds)),
                        self._default(spec),
                    ]
                    for name, spec in SPECS.items()
                ),
            )
        ]
        for name, spec in SPECS.items():
            section = self.section(name, name)
            checks = {kind: spec.checker(kind) for kind in sorted(spec.kinds)}
            if len(set(checks.values())) == 1:
                section += _para("Accepted values: ", *_inline(_first(spec.check)).children)
            else:  # e.g. scope: a callable for the HTTP doors, a string for run()
                for kind, check in checks.items():
                    said = _inline(_first(check)).children
                    section += _para(f"Accepted values ({kind} doors): ", *said)
            section += _para("Default: ", self._default(spec))
            items = nodes.bullet_list()
            for kind in sorted(spec.kinds):
                item = nodes.list_item()
                item += _para(f"{kind}: ", _code(_KIND_DOORS[kind]))
                items += item
            section += items
            out.append(section)
        return out

    @staticmethod
    def _default(spec: Any) -> nodes.inline:
        said = nodes.inline()
        if spec.setting is None:
            said += _code(repr(spec.default))
            return said
        from django_idempotency.conf import DEFAULTS

        if spec.setting not in DEFAULTS:
            # Derived from several settings (a property of the settings object).
            said += nodes.Text("from the settings: ")
            said += _code(spec.setting)
            return said
        said += nodes.Text("the ")
        said += _xref("setting", spec.setting, _code(spec.setting))
        if spec.setting_kinds is None:
            said += nodes.Text(" setting")
        else:
            kinds = " and ".join(sorted(spec.setting_kinds))
            said += nodes.Text(f" setting for {kinds} doors, else ")
            said += _code(repr(spec.default))
        return said


def _first(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").split("\n\n")[0]


# -- problem types ------------------------------------------------------------------------


def _subclasses(cls: type[IdempotencyError]) -> Iterator[type[IdempotencyError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


def problem_classes() -> dict[str, list[type[IdempotencyError]]]:
    """Every problem type slug, with the exception classes that carry it."""
    from django_idempotency.exceptions import IdempotencyError

    found: dict[str, list[type[IdempotencyError]]] = {}
    for cls in _subclasses(IdempotencyError):
        if cls.__module__.startswith("django_idempotency") and cls not in found.get(
            cls.type_slug, []
        ):
            found.setdefault(cls.type_slug, []).append(cls)
    return found


class ProblemsDirective(_Directive):
    """One section per problem type, anchored at its slug."""

    def run(self) -> list[nodes.Node]:
        base = _problem_type_base()
        found = sorted(problem_classes().items(), key=lambda item: (item[1][0].status, item[0]))
        out: list[nodes.Node] = [
            _table(
                ["Status", "Type", "Title"],
                (
                    [
                        str(classes[0].status),
                        _xref("problem", slug, _code(slug)),
                        classes[0].title,
                    ]
                    for slug, classes in found
                ),
            )
        ]
        for slug, classes in found:
            section = self.section(slug, slug)
            first = classes[0]
            section += _para(_code(f"{first.status}"), f" {first.title}")
            section += _para("type: ", _code(base + slug))
            for cls in classes:
                path = f"django_idempotency.{cls.__name__}"
                section += _para("Raised as ", _code(path), ":")
                section.extend(_doc(cls))
            self.note("problem", slug, slug)
            out.append(section)
        return out


def _problem_type_base() -> str:
    """What a problem's ``type`` URI starts with, by default (``PROBLEM_TYPE_BASE``)."""
    from django_idempotency.conf import DEFAULTS

    return str(DEFAULTS["PROBLEM_TYPE_BASE"])


# -- system checks ------------------------------------------------------------------------


def check_ids() -> list[tuple[str, str]]:
    """Every system check id with what it reports, in id order."""
    from django_idempotency import checks
    from django_idempotency.conf import SETTINGS, SHAPE_CHECK, check_id

    found = {
        SHAPE_CHECK.removeprefix(_CHECK_PREFIX): (
            "settings.IDEMPOTENCY is not a dict, or has an unknown key (the message names "
            "the closest known key)."
        )
    }
    for f in SETTINGS:
        found[check_id(f.name).removeprefix(_CHECK_PREFIX)] = (
            f'A bad value of IDEMPOTENCY["{f.name}"] (the message says what it must be).'
        )
    for _, function in inspect.getmembers(checks, inspect.isfunction):
        summary = (inspect.getdoc(function) or "").split("\n\n")[0]
        for ident, what in _DOC_CHECK.findall(summary):
            what = " ".join(what.split()).rstrip(".")
            found.setdefault(ident, what[:1].upper() + what[1:] + ".")
    return sorted(found.items())


class ChecksDirective(_Directive):
    """Every system check id, anchored at the id."""

    def run(self) -> list[nodes.Node]:
        from django_idempotency.conf import SETTINGS, check_id

        by_id = {check_id(f.name).removeprefix(_CHECK_PREFIX): f.name for f in SETTINGS}
        out: list[nodes.Node] = []
        for ident, what in check_ids():
            section = self.section(ident, _CHECK_PREFIX + ident)
            level = "Warning" if ident.startswith("W") else "Error"
            section += _para(f"{level}. ", *_inline(what).children)
            if ident in by_id:
                name = by_id[ident]
                section += _para("See ", _xref("setting", name, _code(name)), ".")
            out.append(section)
        return out


# -- outcomes -------------------------------------------------------------------------------


class OutcomesDirective(_Directive):
    """Every outcome, the signal it sends and the level it is logged at."""

    def run(self) -> list[nodes.Node]:
        import logging

        from django_idempotency import events

        return [
            _table(
                ["Outcome", "Signal", "Log level"],
                (
                    [
                        _code(outcome.value),
                        _code(_signal_name(events._REPORTS[outcome][0])),
                        logging.getLevelName(events._REPORTS[outcome][1]).lower(),
                    ]
                    for outcome in events.Outcome
                ),
            )
        ]


def _signal_name(signal: Any) -> str:
    from django_idempotency import signals

    return next(name for name, value in vars(signals).items() if value is signal)


# -- management commands ------------------------------------------------------------------


class CommandDirective(_Directive):
    """A management command's subcommands and options, from its own parser."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from django.core.management import load_command_class

        name = self.arguments[0]
        command = load_command_class("django_idempotency", name)
        parser = command.create_parser("manage.py", name)
        out: list[nodes.Node] = [_para(command.help)]
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = (
            [(f"{name} {sub}", p) for sub, p in subparsers[0].choices.items()]
            if subparsers
            else [(name, parser)]
        )
        choices = subparsers[0]._choices_actions if subparsers else []
        helps = {choice.dest: choice.help for choice in choices}
        for title, sub in parsers:
            anchor = title.replace(" ", "-")
            section = self.section(anchor, title)
            if helps.get(title.split(" ")[-1]):
                section += _para(helps[title.split(" ")[-1]])
            section += _table(["Argument", "Meaning"], _arguments(sub))
            out.append(section)
        return out


_DJANGO_OPTIONS = {
    "--version", "-v", "--verbosity", "--settings", "--pythonpath", "--traceback",
    "--no-color", "--force-color", "--skip-checks", "-h", "--help",
}  # fmt: skip


def _arguments(parser: argparse.ArgumentParser) -> Iterator[list[nodes.Node | str]]:
    for action in parser._actions:
        if set(action.option_strings) & _DJANGO_OPTIONS:
            continue
        if action.option_strings:
            spelled = ", ".join(action.option_strings)
            if action.nargs != 0:
                spelled += " " + str(action.metavar or action.dest.upper())
        else:
            spelled = str(action.metavar or action.dest.upper())
            if action.nargs in ("*", "+"):
                spelled += "..."
        meaning = action.help or ""
        if action.choices:
            meaning += " One of: " + ", ".join(str(c) for c in action.choices) + "."
        if action.option_strings and action.nargs != 0 and action.default not in (None, False):
            meaning += f" Default: {action.default}."
        yield [_code(spelled), meaning.strip()]


# -- setup --------------------------------------------------------------------------------


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives and the ``setting`` and ``problem`` cross-reference roles."""
    app.add_object_type("setting", "setting", indextemplate="pair: %s; setting")
    app.add_object_type("problem", "problem", indextemplate="pair: %s; problem type")
    app.add_directive("idempotency-settings", SettingsDirective)
    app.add_directive("idempotency-options", OptionsDirective)
    app.add_directive("idempotency-problems", ProblemsDirective)
    app.add_directive("idempotency-checks", ChecksDirective)
    app.add_directive("idempotency-command", CommandDirective)
    app.add_directive("idempotency-outcomes", OutcomesDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
