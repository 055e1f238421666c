"""``{% load idempotency %}``: keys for HTML forms, so a double-clicked submit runs once.

The key is fresh per rendered form: both submissions of a double click carry it, and a
reload gets a new one.
"""

from __future__ import annotations

import uuid

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..conf import get_settings

register = template.Library()


@register.simple_tag
def idempotency_key() -> str:
    """A fresh key: a random UUID (version 4), which also satisfies ``KEY_FORMAT = "uuid"``."""
    return str(uuid.uuid4())


@register.simple_tag
def idempotency_key_field() -> SafeString:
    """A hidden input named ``IDEMPOTENCY["FORM_FIELD"]`` holding a fresh key."""
    # autocomplete="off": Firefox otherwise restores a hidden input's old value when the
    # page is reloaded, and the reloaded form would reuse the key of the one it replaced.
    return format_html(
        '<input type="hidden" name="{}" value="{}" autocomplete="off">',
        get_settings().FORM_FIELD,
        idempotency_key(),
    )
