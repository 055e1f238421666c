"""The JSON serializers never unpickle and rebuild only known exception classes."""

from __future__ import annotations

import json

import pytest

from django_idempotency.exceptions import ReplayedError
from django_idempotency.serializers import JSONErrorSerializer, JSONValueSerializer

pytestmark = pytest.mark.no_redis


class Outer:
    class NestedError(Exception):
        pass


def roundtrip(error: BaseException) -> BaseException:
    s = JSONErrorSerializer()
    return s.loads(s.dumps(error))


def test_builtin_and_nested_classes_are_rebuilt():
    assert isinstance(roundtrip(KeyError("k")), KeyError)
    again = roundtrip(Outer.NestedError("x", 1))
    assert type(again) is Outer.NestedError and again.args == ("x", 1)


def test_module_not_imported_is_never_imported():
    data = json.dumps(
        {"module": "antigravity", "qualname": "Fly", "args": [], "message": "up"}
    ).encode()
    error = JSONErrorSerializer().loads(data)
    assert isinstance(error, ReplayedError) and error.type_name == "antigravity.Fly"
    import sys

    assert "antigravity" not in sys.modules


def test_non_exception_attribute_is_not_called():
    data = json.dumps({"module": "os", "qualname": "system", "args": ["true"], "message": ""})
    assert isinstance(JSONErrorSerializer().loads(data.encode()), ReplayedError)


def test_args_that_are_not_json_fall_back_to_replayed_error():
    error = roundtrip(ValueError(object()))
    assert isinstance(error, ReplayedError) and error.type_name == "builtins.ValueError"


def test_values_roundtrip_as_json():
    s = JSONValueSerializer()
    assert s.loads(s.dumps({"a": [1, 2.5, None, "x"]})) == {"a": [1, 2.5, None, "x"]}
    with pytest.raises(ValueError):
        s.dumps(float("nan"))
