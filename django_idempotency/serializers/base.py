"""What a serializer of ``run()`` values or errors provides (``VALUE_SERIALIZER``...)."""

from __future__ import annotations

from typing import Any, Protocol


class ValueSerializer(Protocol):
    """Turns an action's return value into bytes and back."""

    def dumps(self, value: Any) -> bytes:
        """Serialize ``value``; raise ``TypeError``/``ValueError`` when it cannot be."""

    def loads(self, data: bytes) -> Any:
        """Rebuild a value from :meth:`dumps` output."""


class ErrorSerializer(Protocol):
    """Turns an action's exception into bytes and back into an exception."""

    def dumps(self, error: BaseException) -> bytes:
        """Serialize ``error``."""

    def loads(self, data: bytes) -> BaseException:
        """Rebuild an exception from :meth:`dumps` output."""
