"""ASGI entry point of the benchmark project (``uvicorn benchmarks.asgi:application``)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
application = get_asgi_application()
