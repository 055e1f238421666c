"""Sphinx configuration: ``make docs`` builds the site into docs/_build/html.

Sphinx because Django users know it from Django, pytest-django and Celery (on Read the
Docs), autodoc writes the Python API reference from the docstrings, and a local
extension (``_ext/idempotency_reference.py``) writes the settings, options, problem
types, system checks and command reference from the code itself. Pages are MyST Markdown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

# autodoc imports the package, which needs Django's settings; the reference directives
# read the settings table and the checks, never a Redis server.
if not settings.configured:
    settings.configure(
        SECRET_KEY="docs",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_idempotency",
        ],
        IDEMPOTENCY={"STORE": "django_idempotency.stores.memory.open_store"},
        USE_TZ=True,
    )
    django.setup()

import django_idempotency  # noqa: E402

project = "django-idempotency"
author = "django-idempotency contributors"
copyright = "django-idempotency contributors"
release = django_idempotency.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "idempotency_reference",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
# Headings up to ### get anchors, so pages can link to page.md#a-heading.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Links to settings ({setting}`TTL`) and problem types ({problem}`in-progress`) must
# resolve; Python cross-references into Django, DRF or the standard library need not
# (there is no intersphinx inventory offline).
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r".*")]

html_theme = "furo"
html_title = f"django-idempotency {release}"
html_static_path: list[str] = []
