"""Replays answered in front of Django: ``asgi_app(application)``, ``wsgi_app(application)``.

Opt-in. For a covered method with a key whose record is finished, the wrapper answers
the replay before Django builds a request, runs its middleware or resolves a URL; every
other request goes into Django unchanged. It needs a scope computed from the request
headers alone, marked with :func:`headers_scope`; with any other scope it refuses to
start (``ImproperlyConfigured``).
"""

from __future__ import annotations

from .asgi import asgi_app
from .scope import headers_scope
from .wsgi import wsgi_app

__all__ = ["asgi_app", "headers_scope", "wsgi_app"]
