"""``X-Served-By``: which gunicorn worker process answered (replays included)."""

import os
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase


class ServedByMiddleware:
    """Tag every response with the worker's pid.

    Listed before ``IdempotencyMiddleware``, so it sees responses on their way
    out after they were stored: a replay says which process replayed it, not which
    process ran the view the first time.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        response["X-Served-By"] = f"pid {os.getpid()}"
        return response
