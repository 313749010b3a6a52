"""The shipped conformance suite, run against every built-in store."""

from __future__ import annotations

from pathlib import Path

import pytest
from secret_store_helpers import POSTGRES_URL, pg_rows, table_for

from aims_snaptrade.secrets import (
    Keyring,
    MemorySecretStore,
    PostgresSecretStore,
    SecretStore,
    SQLiteSecretStore,
)
from aims_snaptrade.testing.secret_store_conformance import (
    EncryptedAtRestConformance,
    SecretStoreConformance,
)

KEYRING = Keyring.generate("v1").rotated("v2")


def _file_bytes(path: Path) -> bytes:
    # The database and its WAL: a committed secret may live only in the WAL until a checkpoint.
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


class TestMemoryStore(SecretStoreConformance):
    """Memory store without keys (the tests-only configuration)."""

    def make_store(self, tmp_path: Path) -> SecretStore:
        return MemorySecretStore()

    def test_is_not_persistent_nor_encrypted(self, store: SecretStore) -> None:
        assert store.persistent is False  # type: ignore[attr-defined]
        assert store.encrypted is False  # type: ignore[attr-defined]
        assert store.kind == "memory"  # type: ignore[attr-defined]


class TestEncryptedMemoryStore(SecretStoreConformance, EncryptedAtRestConformance):
    """Memory store with keys: holds ciphertext like the SQL stores."""

    def make_store(self, tmp_path: Path) -> SecretStore:
        return MemorySecretStore(KEYRING)

    def raw_storage(self, store: SecretStore) -> bytes:
        assert isinstance(store, MemorySecretStore)
        return b"".join(row.blob + row.key_version.encode() for row in store._rows.values())


class TestSQLiteStore(SecretStoreConformance, EncryptedAtRestConformance):
    """The embedded default, encrypted."""

    def make_store(self, tmp_path: Path) -> SecretStore:
        return SQLiteSecretStore(tmp_path / "secrets.db", KEYRING)

    def make_store_with_keyring(self, tmp_path: Path, keyring: Keyring) -> SecretStore:
        return SQLiteSecretStore(tmp_path / "secrets.db", keyring)

    def raw_storage(self, store: SecretStore) -> bytes:
        assert isinstance(store, SQLiteSecretStore)
        return _file_bytes(store.path)


class TestPlaintextSQLiteStore(SecretStoreConformance):
    """SQLite without keys (sandbox only): behaves the same, declares encrypted=False."""

    def make_store(self, tmp_path: Path) -> SecretStore:
        return SQLiteSecretStore(tmp_path / "secrets.db")

    def test_declares_unencrypted(self, store: SecretStore) -> None:
        assert store.encrypted is False  # type: ignore[attr-defined]


class TestPostgresStore(SecretStoreConformance, EncryptedAtRestConformance):
    """The server store on the real PostgreSQL."""

    @pytest.fixture(autouse=True)
    def _schema(self, pg_schema: str) -> None:
        self.schema = pg_schema

    def make_store(self, tmp_path: Path) -> SecretStore:
        return PostgresSecretStore(POSTGRES_URL, KEYRING, schema=self.schema, table=table_for(tmp_path))

    def make_store_with_keyring(self, tmp_path: Path, keyring: Keyring) -> SecretStore:
        return PostgresSecretStore(POSTGRES_URL, keyring, schema=self.schema, table=table_for(tmp_path))

    def raw_storage(self, store: SecretStore) -> bytes:
        assert isinstance(store, PostgresSecretStore)
        rows = pg_rows(store.schema, store.table)
        return b"".join(value if isinstance(value, bytes) else str(value).encode() for row in rows for value in row)
