"""The doors: framework glue onto the two lifecycles, one module per framework.

What the HTTP doors share lives here: markers on views and requests.

A request is handled by exactly one door: the one closest to the view. The
middleware steps aside for views that carry a decorator or the DRF mixin, and a
door that takes a request marks it so no other door takes it again.
"""

from __future__ import annotations

from typing import Any

from ..http import django_request

#: Attribute set on a view by ``@idempotency_exempt``.
EXEMPT_ATTR = "idempotency_exempt"
#: Attribute set on a view (or DRF view class) whose own door handles idempotency.
DOOR_ATTR = "idempotency_door"
#: Attribute set by ``@idempotent_view`` on the view it returns: that door's ``HttpFlow``.
FLOW_ATTR = "idempotency_flow"
_TAKEN = "_idempotency_taken"


def view_has_own_door(view_func: Any) -> bool:
    """Whether the view is exempt or guarded by the decorator or the DRF mixin."""
    if getattr(view_func, EXEMPT_ATTR, False) or getattr(view_func, DOOR_ATTR, False):
        return True
    view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
    return bool(getattr(view_class, DOOR_ATTR, False) or getattr(view_class, EXEMPT_ATTR, False))


def take(request: Any) -> bool:
    """Mark ``request`` as handled by a door; False when another door already took it."""
    raw = django_request(request)
    if getattr(raw, _TAKEN, False):
        return False
    setattr(raw, _TAKEN, True)
    return True
