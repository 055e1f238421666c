"""``manage.py idempotency_inspect``."""
