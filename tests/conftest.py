"""Fixtures: one private redis-server per test session, a clean database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from django_idempotency.testing import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, without persistence, for the whole session."""
    with RedisServer() as server:
        os.environ["REDIS_URL"] = server.url
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The server's URL, with an empty database for this test."""
    client = redis_server.client()
    client.flushall()
    yield redis_server.url
    client.close()


@pytest.fixture
def redis_client(redis_server: RedisServer, redis_url: str) -> Any:
    """A plain redis-py client on the test server (for inspecting what the app stored)."""
    return redis_server.client()


@pytest.fixture(autouse=True)
def idempotency_settings(request: pytest.FixtureRequest, settings: Any) -> Any:
    """Point django-redis and the app at the test server (when the test uses Redis)."""
    if "no_redis" in request.keywords:
        return settings
    url = request.getfixturevalue("redis_url")
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
        }
    }
    settings.IDEMPOTENCY = {"REDIS": url, "LOCK_TTL": 5, "WAIT_TIMEOUT": 5}
    return settings
