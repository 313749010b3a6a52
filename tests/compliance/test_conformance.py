"""The built-in consent stores and audit trails pass the shipped conformance suites."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from compliance_helpers import AUDIT_SECRET, POSTGRES_URL

from aims_snaptrade.compliance import (
    AuditKey,
    PostgresAuditTrail,
    PostgresConsentStore,
    SQLiteAuditTrail,
    SQLiteConsentStore,
)
from aims_snaptrade.testing.compliance_conformance import AuditTrailConformance, ConsentStoreConformance
from aims_snaptrade.testing.forget_conformance import postgres_rows


@pytest.fixture(scope="module")
def schema_prefix():
    prefix = f"aims_conf_{uuid.uuid4().hex[:8]}"
    yield prefix
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "%",)).fetchall()
        for (name,) in rows:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def _schema(prefix: str, tmp_path: Path) -> str:
    # One schema per test (tmp_path is per test); a second replica of the same test shares it.
    return f"{prefix}_{abs(hash(str(tmp_path))) % 10**10}"


class TestSQLiteConsentStore(ConsentStoreConformance):
    def make_store(self, tmp_path):
        return SQLiteConsentStore(tmp_path / "consents.db")


class TestPostgresConsentStore(ConsentStoreConformance):
    @pytest.fixture(autouse=True)
    def _prefix(self, schema_prefix):
        self.prefix = schema_prefix

    def make_store(self, tmp_path):
        return PostgresConsentStore(POSTGRES_URL, schema=_schema(self.prefix, tmp_path))

    def stored_bytes(self, store, tmp_path):
        return postgres_rows(POSTGRES_URL, _schema(self.prefix, tmp_path))


class TestSQLiteAuditTrail(AuditTrailConformance):
    def make_trail(self, tmp_path):
        return SQLiteAuditTrail(tmp_path / "audit.db", AuditKey(AUDIT_SECRET))


class TestPostgresAuditTrail(AuditTrailConformance):
    @pytest.fixture(autouse=True)
    def _prefix(self, schema_prefix):
        self.prefix = schema_prefix

    def make_trail(self, tmp_path):
        return PostgresAuditTrail(POSTGRES_URL, AuditKey(AUDIT_SECRET), schema=_schema(self.prefix, tmp_path))

    def stored_bytes(self, store, tmp_path):
        return postgres_rows(POSTGRES_URL, _schema(self.prefix, tmp_path))


class TestMemoryConsentStore(ConsentStoreConformance):
    def make_store(self, tmp_path):
        return SQLiteConsentStore(":memory:")
