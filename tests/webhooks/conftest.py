"""Fixtures of the webhook tests.

Redis (127.0.0.1:6379, AIMS_TEST_REDIS_URL) and PostgreSQL (127.0.0.1:5432, AIMS_TEST_POSTGRES_URL)
are real servers; these tests fail, never skip, when they are not answering (`.ci/run` starts them).
Every test uses its own Redis key prefix and PostgreSQL table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from webhook_helpers import drop_schema


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A schema private to this test session, dropped afterwards."""
    schema = f"aims_webhooks_test_{uuid.uuid4().hex[:10]}"
    yield schema
    drop_schema(schema)


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """A key prefix private to this test session."""
    return f"aims-test-webhooks:{uuid.uuid4().hex}:"
