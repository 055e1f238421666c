"""ASGI entry point of the benchmark project (``uvicorn benchmarks.asgi:application``)."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
application: Any = get_asgi_application()
if os.environ.get("BENCH_EDGE") == "1":
    from django_idempotency.edge import asgi_app

    application = asgi_app(application)
elif os.environ.get("BENCH_EDGE") == "ceiling":
    from benchmarks.ceiling import asgi_ceiling

    application = asgi_ceiling(application)
