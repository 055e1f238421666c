"""Serializers for ``run()`` return values and errors: the protocols and the JSON defaults.

A new serializer is a class with ``dumps``/``loads`` (see :mod:`.base`), named by dotted
path in ``IDEMPOTENCY["VALUE_SERIALIZER"]`` / ``["ERROR_SERIALIZER"]`` or passed to ``run()``.
"""

from .base import ErrorSerializer, ValueSerializer
from .json import JSONErrorSerializer, JSONValueSerializer

__all__ = ["ErrorSerializer", "JSONErrorSerializer", "JSONValueSerializer", "ValueSerializer"]
