"""The edge for WSGI: :func:`wsgi_app` wraps the project's WSGI application.

A covered request with a key has its body read here (when it declares a length within
Django's own limit) and put back as a fresh ``wsgi.input``; an answer is returned at
once, and any other request goes to the application unchanged.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.wsgi import get_path_info, get_script_name

from ..runtime import get_engine
from ..steps import drive
from .decide import Edge, RawRequest, body_limit, response_headers

logger = logging.getLogger("django_idempotency")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _path(environ: dict[str, Any]) -> str:
    """``request.path`` as Django's ``WSGIRequest`` builds it."""
    script_name = get_script_name(environ)
    path_info = get_path_info(environ) or "/"
    return "{}/{}".format(script_name.rstrip("/"), path_info.replace("/", "", 1))


def wsgi_app(application: WSGIApp) -> WSGIApp:
    """Wrap a Django WSGI application so finished records are replayed before it runs.

    Call it once at start-up, after ``get_wsgi_application()``; it raises
    ``ImproperlyConfigured`` when the project's ``IDEMPOTENCY["SCOPE"]`` is not computed
    from headers alone (see :func:`~django_idempotency.edge.headers_scope`).
    """
    edge = Edge()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        if not edge.wants(method, environ):
            return application(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return application(environ, start_response)
        if length > body_limit():
            return application(environ, start_response)
        # Django reads exactly CONTENT_LENGTH bytes (none without it): so does the edge.
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            answer = drive(
                get_engine().context,
                edge.deciding(
                    RawRequest(
                        method, _path(environ), environ.get("QUERY_STRING", ""), environ, body
                    )
                ),
            )
        except Exception:
            # Nothing was answered: Django handles the request as if there were no edge.
            logger.warning("edge: could not decide; handing the request to Django", exc_info=True)
            answer = None
        if answer is None:
            return application(environ, start_response)
        start_response(f"{answer.status_code} {answer.reason_phrase}", response_headers(answer))
        return [answer.content]

    return app
