"""The idempotency contract in OpenAPI schemas made by drf-spectacular (the ``openapi`` extra).

``SPECTACULAR_SETTINGS["DEFAULT_GENERATOR_CLASS"] = "django_idempotency.openapi.SchemaGenerator"``
documents every operation a door protects, deciding which door acts by the doors' own
rule, and leaves every other operation as drf-spectacular made it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.http import HttpResponse
from django.utils.module_loading import import_string
from drf_spectacular.generators import SchemaGenerator as SpectacularSchemaGenerator
from drf_spectacular.plumbing import ComponentRegistry, ResolvedComponent

from . import exceptions
from .doors import FLOW_ATTR, view_has_own_door
from .doors.drf import IdempotentMixin
from .doors.middleware import IdempotencyMiddleware
from .events import Door
from .exceptions import IdempotencyError
from .flows.http import HttpFlow
from .http import PROBLEM_CONTENT_TYPE, problem_document
from .options import NONE, HttpOptions
from .policies import OutcomeUnknownPolicy, StatusRange, StatusSet

__all__ = ["PROBLEM_COMPONENT", "Protection", "SchemaGenerator", "document", "protection"]

#: The name of the problem details schema in ``components/schemas``.
PROBLEM_COMPONENT = "IdempotencyProblem"

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Problem details (RFC 9457) of a request the idempotency layer refused.",
    "properties": {
        "type": {"type": "string", "format": "uri", "description": "What went wrong."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}


class SchemaGenerator(SpectacularSchemaGenerator):
    """drf-spectacular's generator, documenting the idempotency contract where it applies."""

    def create_view(self, callback: Any, method: str, request: Any = None) -> Any:
        """The view drf-spectacular inspects; a protected operation's schema documents it."""
        view = super().create_view(callback, method, request)  # type: ignore[no-untyped-call]
        protected = protection(callback, view, method)
        if protected is not None:
            _document_operations_of(view, protected)
        return view


@dataclass(frozen=True)
class Protection:
    """Which door protects an operation, with the options it applies there."""

    door: Door
    options: HttpOptions


def protection(callback: Any, view: Any, method: str) -> Protection | None:
    """The door protecting ``method`` requests to ``view`` and its options, or ``None``.

    ``callback`` is what the URL resolves to; ``view`` the instance made from it.
    """
    flow = _acting_flow(callback, view)
    if flow is None:
        return None
    options = flow.overrides.http()
    return Protection(flow.door, options) if method.upper() in options.methods else None


def _acting_flow(callback: Any, view: Any) -> HttpFlow | None:
    """The flow of the door that takes requests to this view (the closest to the view)."""
    if not view_has_own_door(callback):
        return HttpFlow(Door.MIDDLEWARE, NONE) if _middleware_installed() else None
    # as_view() copies what decorators set on dispatch (method_decorator) to the callback.
    decorated: HttpFlow | None = getattr(callback, FLOW_ATTR, None)
    if decorated is not None:
        return decorated
    if not isinstance(view, IdempotentMixin):
        return None  # exempt
    actions = type(view)._idempotency_actions
    if actions is not None and getattr(view, "action", None) not in actions:
        return None  # a viewset action the mixin leaves unprotected
    return type(view)._idempotency_flow


def _middleware_installed() -> bool:
    classes = map(import_string, getattr(django_settings, "MIDDLEWARE", None) or ())
    return any(isinstance(c, type) and issubclass(c, IdempotencyMiddleware) for c in classes)


def _document_operations_of(view: Any, protected: Protection) -> None:
    """Make ``view``'s schema add the contract to the operations it returns."""
    # A copy: the view's class may share one schema object between its views.
    schema = copy.copy(view.schema)
    plain = schema.get_operation

    def get_operation(
        path: str, path_regex: str, path_prefix: str, method: str, registry: ComponentRegistry
    ) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = plain(path, path_regex, path_prefix, method, registry)
        if operation is not None:
            document(operation, protected, registry)
        return operation

    schema.get_operation = get_operation
    view.schema = schema


def document(operation: dict[str, Any], protected: Protection, registry: ComponentRegistry) -> None:
    """Add the contract of the door ``protected`` names to ``operation`` (an OpenAPI object)."""
    options = protected.options
    responses: dict[str, Any] = operation.setdefault("responses", {})

    replayed = {
        "schema": {"type": "string", "enum": ["true"]},
        "description": "Sent, with the value `true`, when this response is the stored "
        "response of an earlier request with the same key, replayed.",
    }
    for status, response in responses.items():
        if _stored(status, options):
            response.setdefault("headers", {})[options.replay_header] = replayed

    header = options.header.lower()
    parameters = [
        p
        for p in operation.get("parameters", [])
        if not (p.get("in") == "header" and str(p.get("name", "")).lower() == header)
    ]
    operation["parameters"] = [*parameters, _key_parameter(options)]

    ref: dict[str, str] | None = None
    if not (protected.door is Door.DRF and options.drf_exception_handler):
        problem = ResolvedComponent(  # type: ignore[no-untyped-call]
            name=PROBLEM_COMPONENT,
            type=ResolvedComponent.SCHEMA,
            object=PROBLEM_COMPONENT,
            schema=_PROBLEM_SCHEMA,
        )
        registry.register_on_missing(problem)
        ref = problem.ref
    for code, errors in _problems(options).items():
        _add_problem(responses.setdefault(str(code), {}), errors, ref, options.problem_type_base)


def _stored(status: str, options: HttpOptions) -> bool:
    """Whether a response with ``status`` is stored (and so may be a replay)."""
    if not status.isdigit():
        return False
    policy = options.store_responses
    if isinstance(policy, (StatusRange, StatusSet)):
        return policy(HttpResponse(status=int(status)))
    return True  # a callable: only the response itself can tell


def _key_parameter(options: HttpOptions) -> dict[str, Any]:
    if options.required:
        presence = "Required: a request without it is refused (400)."
    else:
        presence = "Optional: a request without it runs unprotected."
    fmt = "" if options.key_format is None else f", matching `{options.key_format.pattern}`"
    return {
        "name": options.header,
        "in": "header",
        "required": options.required,
        "schema": {"type": "string"},
        "description": (
            "A unique key per logical operation, sent again unchanged on every retry: the "
            "first request with it runs, a retry or concurrent duplicate gets its response "
            "replayed. A Structured Field string (quoted) or a bare token of visible ASCII, "
            f"at most {options.max_key_length} characters{fmt}. {presence} Kept for "
            f"{options.ttl:g} s after the first response."
        ),
    }


def _problems(options: HttpOptions) -> dict[int, list[IdempotencyError]]:
    """The problems a protected request may get, by status."""
    possible: list[tuple[IdempotencyError, bool]] = [
        (exceptions.InvalidKey(), True),
        (exceptions.KeyRequired(), options.required),
        (exceptions.RequestInProgress(), True),
        (exceptions.IdempotencyTimeout(), options.conflict == "wait"),
        (exceptions.OutcomeUnknown(), options.outcome_unknown is OutcomeUnknownPolicy.REFUSE),
        (exceptions.FingerprintMismatch(), True),
        (exceptions.NotReplayable(), True),
        (exceptions.IdempotencyUnavailable(), not options.fail_open),
    ]
    by_status: dict[int, list[IdempotencyError]] = {}
    for error, applies in possible:
        if applies:
            by_status.setdefault(error.status, []).append(error)
    return by_status


def _add_problem(
    response: dict[str, Any],
    errors: list[IdempotencyError],
    ref: dict[str, str] | None,
    type_base: str,
) -> None:
    """The problems of one status in ``response``, beside what the view documents there.

    ``ref`` is the problem schema; ``None`` where the project's exception handler
    writes the body.
    """
    documents = [problem_document(e, type_base) for e in errors]
    lines = [f"{d['title']} (problem type `{d['type']}`)." for d in documents]
    described = response.get("description", "")
    response["description"] = "\n\n".join([d for d in (described,) if d] + lines)
    if ref is not None:
        examples = {e.type_slug: {"value": d} for e, d in zip(errors, documents, strict=True)}
        response.setdefault("content", {})[PROBLEM_CONTENT_TYPE] = {
            "schema": ref,
            "examples": examples,
        }
    if any(e.retry_after is not None for e in errors):
        response.setdefault("headers", {})["Retry-After"] = {
            "schema": {"type": "integer", "minimum": 0},
            "description": "Seconds to wait before retrying with the same key.",
        }
