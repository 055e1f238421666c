"""Observers: integrations that count and trace what :mod:`django_idempotency.events` reports.

One module per integration, each importing its library only itself:
``prometheus`` (``pip install django-idempotency[prometheus]``) and ``otel``
(``pip install django-idempotency[otel]``). Install one with
``IDEMPOTENCY["OBSERVERS"]`` or :func:`django_idempotency.events.install`; a new
integration implements the :class:`~django_idempotency.events.Observer` protocol, and
:class:`~django_idempotency.events.Tracer` to trace each request as a whole.
"""
