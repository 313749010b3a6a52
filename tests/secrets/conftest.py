"""Fixtures for the secret-store tests: keyrings and an isolated PostgreSQL schema.

PostgreSQL is a real server (127.0.0.1:5432 by default, override with AIMS_TEST_POSTGRES_URL);
these tests fail, never skip, when it is not answering: `.ci/run` starts it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from secret_store_helpers import POSTGRES_URL, table_for

from aims_snaptrade.secrets import Keyring, PostgresSecretStore


@pytest.fixture(scope="session")
def keyring() -> Keyring:
    """A two-key keyring: v2 encrypts, v1 still decrypts."""
    return Keyring.generate("v1").rotated("v2")


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A schema private to this test session, dropped afterwards."""
    schema = f"aims_secrets_test_{uuid.uuid4().hex[:10]}"
    yield schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_store(pg_schema: str, tmp_path: Path, keyring: Keyring) -> Iterator[PostgresSecretStore]:
    """A PostgreSQL store over a table of its own."""
    store = PostgresSecretStore(POSTGRES_URL, keyring, schema=pg_schema, table=table_for(tmp_path))
    yield store
    store.close()
