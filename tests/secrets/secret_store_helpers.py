"""Helpers shared by the secret-store tests (PostgreSQL access outside the store)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psycopg

POSTGRES_URL = os.environ.get("AIMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def table_for(tmp_path: Path) -> str:
    """A table name derived from a test's tmp_path: fresh per test, stable across reopening."""
    return "t_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:20]


def pg_url(schema: str, table: str) -> str:
    """The store URL of ``schema.table``."""
    return f"{POSTGRES_URL}?schema={schema}&table={table}"


def pg_rows(schema: str, table: str) -> list[tuple[object, ...]]:
    """Every raw row of a store table, read with a separate connection."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        return list(conn.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY user_id'))


def pg_execute(sql: str, params: tuple[object, ...] = ()) -> None:
    """Run one statement on a separate connection (to tamper with rows)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql, params)
