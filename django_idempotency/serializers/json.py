"""The default serializers: JSON values, and errors rebuilt from classes already imported.

Data read from Redis is never unpickled: values are JSON, and errors are rebuilt
only from classes already imported in this process (never by importing a module
named in Redis), falling back to :class:`~django_idempotency.exceptions.ReplayedError`.
"""

from __future__ import annotations

import builtins
import json
import sys
from typing import Any

from ..exceptions import ReplayedError


class JSONValueSerializer:
    """Values as compact JSON (so tuples come back as lists)."""

    def dumps(self, value: Any) -> bytes:
        """Serialize ``value`` as JSON."""
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        """Parse JSON."""
        # UTF-8 is all ``dumps`` writes: decoding it here skips ``json.loads``'s encoding
        # detection, a third of the parse for a small value that every storm follower pays.
        return _decode(data.decode())


_decode = json.JSONDecoder().decode


def _json_safe(args: tuple[Any, ...]) -> list[Any] | None:
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return list(args)


class JSONErrorSerializer:
    """Errors as JSON ``{"module", "qualname", "args", "message"}``.

    On replay the original class is rebuilt from ``args`` when the class is already
    imported here and is an ``Exception``; otherwise a ``ReplayedError`` carrying the
    type name and message is returned.
    """

    def dumps(self, error: BaseException) -> bytes:
        """Serialize the error's class, args (when JSON-safe) and message."""
        cls = type(error)
        return json.dumps(
            {
                "module": cls.__module__,
                "qualname": cls.__qualname__,
                "args": _json_safe(error.args),
                "message": str(error),
            },
            separators=(",", ":"),
        ).encode()

    def loads(self, data: bytes) -> BaseException:
        """Rebuild the error, or a ``ReplayedError`` standing in for it."""
        doc = json.loads(data)
        module, qualname = str(doc["module"]), str(doc["qualname"])
        message, args = str(doc["message"]), doc.get("args")
        cls = _find_class(module, qualname)
        if cls is not None and args is not None:
            try:
                error = cls(*args)
            except Exception:
                error = None
            if isinstance(error, cls) and str(error) == message:
                return error
        return ReplayedError(f"{module}.{qualname}", message)


def _find_class(module_name: str, qualname: str) -> type[Exception] | None:
    module: Any = builtins if module_name == "builtins" else sys.modules.get(module_name)
    # A qualname may be nested (Outer.Inner) but locals are not reachable.
    for part in qualname.split("."):
        if module is None or part == "<locals>":
            return None
        module = getattr(module, part, None)
    if isinstance(module, type) and issubclass(module, Exception):
        return module
    return None
