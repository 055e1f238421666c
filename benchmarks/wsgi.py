"""WSGI entry point of the benchmark project (``gunicorn benchmarks.wsgi``)."""

import os
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
application: Any = get_wsgi_application()
if os.environ.get("BENCH_EDGE") == "1":
    from django_idempotency.edge import wsgi_app

    application = wsgi_app(application)
elif os.environ.get("BENCH_EDGE") == "ceiling":
    from benchmarks.ceiling import wsgi_ceiling

    application = wsgi_ceiling(application)
