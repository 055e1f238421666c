"""Template tag libraries: ``{% load idempotency %}``."""
