"""PostgreSQL store specifics, on the real server: tampering, keys, reconnects, table creation."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from secret_store_helpers import POSTGRES_URL, pg_execute, pg_rows, table_for

from aims_snaptrade.errors import (
    SnapTradeConfigurationError,
    SnapTradeSecretDecryptionError,
    SnapTradeSecretStoreError,
)
from aims_snaptrade.secrets import Keyring, PostgresSecretStore, open_secret_store

SECRET_A = "pg-canary-secret-A-1b2c3d"
SECRET_B = "pg-canary-secret-B-4e5f6a"


def test_rows_hold_ciphertext_and_key_version_only(pg_store: PostgresSecretStore) -> None:
    pg_store.put("alice", SECRET_A)
    rows = pg_rows(pg_store.schema, pg_store.table)
    assert len(rows) == 1
    user_id, version, blob, pending, _updated = rows[0]
    assert (user_id, version, pending) == ("alice", "v2", None)
    assert isinstance(blob, bytes)
    assert SECRET_A.encode() not in blob
    assert all(SECRET_A not in str(value) for value in rows[0])


def test_swapped_ciphertext_fails_with_a_typed_error(pg_store: PostgresSecretStore) -> None:
    pg_store.put("alice", SECRET_A)
    pg_store.put("bob", SECRET_B)
    table = f'"{pg_store.schema}"."{pg_store.table}"'
    pg_execute(
        f"UPDATE {table} SET ciphertext = (SELECT ciphertext FROM {table} WHERE user_id = 'alice') "
        "WHERE user_id = 'bob'"
    )
    with pytest.raises(SnapTradeSecretDecryptionError, match="copied from another user's row"):
        pg_store.get("bob")
    assert pg_store.get("alice") == SECRET_A


def test_wrong_and_missing_keys(pg_store: PostgresSecretStore) -> None:
    pg_store.put("alice", SECRET_A)
    same_table: dict[str, Any] = {"schema": pg_store.schema, "table": pg_store.table}
    with pytest.raises(SnapTradeSecretDecryptionError, match="failed authentication"):
        PostgresSecretStore(POSTGRES_URL, Keyring.generate("v2"), **same_table).get("alice")
    with pytest.raises(SnapTradeSecretDecryptionError, match="not in the keyring"):
        PostgresSecretStore(POSTGRES_URL, Keyring.generate("v5"), **same_table).get("alice")
    with pytest.raises(SnapTradeConfigurationError, match="always encrypted"):
        PostgresSecretStore(POSTGRES_URL, None, **same_table)


def test_unreachable_server_is_a_configuration_error_without_password(keyring: Keyring) -> None:
    with pytest.raises(SnapTradeConfigurationError) as info:
        open_secret_store("postgresql://aims:hunter2-password@127.0.0.1:1/test", keyring)
    text = str(info.value)
    assert "postgresql://aims@127.0.0.1:1/test" in text
    assert "hunter2-password" not in text
    assert "hunter2-password" not in repr(info.value)
    assert "\n" not in text


def test_password_never_shown_in_repr(pg_schema: str, tmp_path: Path, keyring: Keyring) -> None:
    url = POSTGRES_URL.replace("postgres@", "postgres:not-the-password-123@")
    store = PostgresSecretStore(url, keyring, schema=pg_schema, table=table_for(tmp_path))
    assert "not-the-password-123" not in repr(store)
    assert repr(store).startswith("PostgresSecretStore(target='postgresql://postgres@127.0.0.1:5432/test'")
    store.close()


@pytest.mark.parametrize("name", ["bad-name", "x; DROP TABLE y", "", "1abc"])
def test_identifiers_are_validated(keyring: Keyring, name: str) -> None:
    with pytest.raises(SnapTradeConfigurationError, match="plain identifier"):
        PostgresSecretStore(POSTGRES_URL, keyring, table=name)


def test_url_selects_schema_and_table(pg_schema: str, keyring: Keyring) -> None:
    url = POSTGRES_URL.replace("postgresql://", "postgres://") + f"?schema={pg_schema}&table=via_url"
    store = open_secret_store(url, keyring)
    assert isinstance(store, PostgresSecretStore)
    assert (store.schema, store.table) == (pg_schema, "via_url")
    store.put("alice", SECRET_A)
    assert [r[0] for r in pg_rows(pg_schema, "via_url")] == ["alice"]
    store.close()


def test_many_stores_creating_the_same_table_at_once(pg_schema: str, keyring: Keyring) -> None:
    errors: list[BaseException] = []
    stores: list[PostgresSecretStore] = []

    def open_one() -> None:
        try:
            stores.append(PostgresSecretStore(POSTGRES_URL, keyring, schema=pg_schema + "_race", table="race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        stores[0].put("alice", SECRET_A)
        assert all(s.get("alice") == SECRET_A for s in stores)
    finally:
        for store in stores:
            store.close()
        pg_execute(f'DROP SCHEMA "{pg_schema}_race" CASCADE')


def _kill_store_connection(store: PostgresSecretStore) -> None:
    conn = store._conn
    assert conn is not None
    pid = conn.info.backend_pid
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_reads_and_idempotent_writes_survive_a_dropped_connection(pg_store: PostgresSecretStore) -> None:
    pg_store.put("alice", SECRET_A)
    _kill_store_connection(pg_store)
    assert pg_store.get("alice") == SECRET_A
    _kill_store_connection(pg_store)
    pg_store.put("bob", SECRET_B)
    assert pg_store.get("bob") == SECRET_B


def test_non_idempotent_writes_report_a_dropped_connection(pg_store: PostgresSecretStore) -> None:
    pg_store.put("alice", SECRET_A)
    _kill_store_connection(pg_store)
    with pytest.raises(SnapTradeSecretStoreError) as info:
        pg_store.begin_rotation("alice")
    assert info.value.retryable is True
    # The next call reconnects; the failed begin changed nothing.
    assert pg_store.pending_rotations() == []
    pg_store.begin_rotation("alice")
    assert pg_store.pending_rotations() == ["alice"]


def test_child_process_after_fork_uses_its_own_connection(pg_store: PostgresSecretStore) -> None:
    pg_store.put("parent", SECRET_A)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            pg_store.put("child", SECRET_B)
            code = 0 if pg_store.get("parent") == SECRET_A else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pg_store.get("child") == SECRET_B
    assert pg_store.get("parent") == SECRET_A  # the parent's own connection still works


def test_closed_store_raises_a_store_error(pg_store: PostgresSecretStore) -> None:
    pg_store.close()
    with pytest.raises(SnapTradeSecretStoreError, match="closed"):
        pg_store.get("alice")
