"""SQLite store specifics: raw file bytes, tampering, file mode, WAL, encryption mode guard."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from aims_snaptrade.errors import (
    SnapTradeConfigurationError,
    SnapTradeSecretDecryptionError,
    SnapTradeSecretStoreError,
    SnapTradeValidationError,
)
from aims_snaptrade.secrets import Keyring, SQLiteSecretStore, rotate_keys

SECRET_A = "sqlite-canary-secret-A-4f9d2"
SECRET_B = "sqlite-canary-secret-B-8c1e7"


def raw_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def raw_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT user_id, key_version, ciphertext FROM user_secrets ORDER BY user_id"))


def test_no_plaintext_in_the_database_files(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "s.db"
    store = SQLiteSecretStore(path, keyring)
    store.put("alice", SECRET_A)
    store.put("bob", SECRET_B)
    # Before and after closing (the close checkpoints the WAL into the main file).
    for _ in range(2):
        raw = raw_bytes(path)
        assert b"alice" in raw  # the read does see the rows...
        assert SECRET_A.encode() not in raw
        assert SECRET_B.encode() not in raw
        store.close()
    rows = raw_rows(path)
    assert [(r[0], r[1]) for r in rows] == [("alice", "v2"), ("bob", "v2")]
    assert all(SECRET_A.encode() not in r[2] for r in rows)  # type: ignore[operator]


def test_unencrypted_store_really_stores_plaintext(tmp_path: Path) -> None:
    # Proves the raw-bytes check above can fail: without keys the secret is in the file.
    path = tmp_path / "plain.db"
    store = SQLiteSecretStore(path)
    store.put("alice", SECRET_A)
    assert SECRET_A.encode() in raw_bytes(path)
    store.close()


def test_swapped_ciphertexts_fail_with_a_typed_error(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "s.db"
    store = SQLiteSecretStore(path, keyring)
    store.put("alice", SECRET_A)
    store.put("bob", SECRET_B)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE user_secrets SET ciphertext = (SELECT ciphertext FROM user_secrets WHERE user_id = 'alice') "
            "WHERE user_id = 'bob'"
        )
    with pytest.raises(SnapTradeSecretDecryptionError, match="copied from another user's row"):
        store.get("bob")
    assert store.get("alice") == SECRET_A
    store.close()


def test_wrong_and_missing_keys_fail_with_typed_errors(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "s.db"
    SQLiteSecretStore(path, keyring).put("alice", SECRET_A)
    with pytest.raises(SnapTradeSecretDecryptionError, match="failed authentication"):
        SQLiteSecretStore(path, Keyring.generate("v2")).get("alice")
    with pytest.raises(SnapTradeSecretDecryptionError, match="not in the keyring"):
        SQLiteSecretStore(path, Keyring.generate("v9")).get("alice")
    with pytest.raises(SnapTradeConfigurationError, match="is encrypted; set SNAPTRADE_ENCRYPTION_KEYS"):
        SQLiteSecretStore(path)
    # The old key alone still reads rows written under it.
    old_only = SQLiteSecretStore(path, Keyring.parse(keyring.export().split(",")[0]))
    assert old_only.get("alice") == SECRET_A


def test_adding_keys_to_a_plaintext_store_then_rotating_encrypts_it(
    tmp_path: Path, keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    plain = SQLiteSecretStore(path)
    plain.put("alice", SECRET_A)
    plain.close()
    with caplog.at_level(logging.WARNING, logger="aims_snaptrade.secrets"):
        store = SQLiteSecretStore(path, keyring)
    assert "1 unencrypted secrets" in caplog.text
    with pytest.raises(SnapTradeSecretDecryptionError, match="rotate-keys"):
        store.get("alice")
    report = rotate_keys(store)
    assert (report.reencrypted, report.complete) == (1, True)
    assert store.get("alice") == SECRET_A
    assert SECRET_A.encode() not in raw_bytes(path)
    # From now on the file is encrypted: opening it without keys is refused.
    with pytest.raises(SnapTradeConfigurationError):
        SQLiteSecretStore(path)
    store.close()


def test_file_is_private_and_in_wal_mode(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "s.db"
    store = SQLiteSecretStore(path, keyring)
    store.put("alice", SECRET_A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s.db-wal").stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()


def test_opening_problems_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(SnapTradeConfigurationError, match="does not exist"):
        SQLiteSecretStore(tmp_path / "missing-dir" / "s.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_SECRET_STORE_URL"):
        SQLiteSecretStore(garbage)


def test_closed_store_raises_a_store_error(tmp_path: Path) -> None:
    store = SQLiteSecretStore(tmp_path / "s.db")
    store.close()
    with pytest.raises(SnapTradeSecretStoreError, match="closed"):
        store.get("alice")


@pytest.mark.parametrize("user_id", ["", "a\x00b", "x" * 2000])
def test_invalid_user_ids_are_refused(tmp_path: Path, user_id: str) -> None:
    store = SQLiteSecretStore(tmp_path / "s.db")
    with pytest.raises(SnapTradeValidationError):
        store.put(user_id, SECRET_A)
    with pytest.raises(SnapTradeValidationError):
        store.put("alice", "")
    store.close()


def test_put_keeps_a_pending_rotation_marker(tmp_path: Path, keyring: Keyring) -> None:
    store = SQLiteSecretStore(tmp_path / "s.db", keyring)
    store.put("alice", SECRET_A)
    store.begin_rotation("alice")
    store.put("alice", SECRET_B)
    assert store.pending_rotations() == ["alice"]
    store.close()


def test_locked_database_waits_for_the_writer(tmp_path: Path, keyring: Keyring) -> None:
    # Another connection holds the write lock for a while; put must queue, not fail.
    path = tmp_path / "s.db"
    store = SQLiteSecretStore(path, keyring, busy_timeout=5)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    timer.start()
    store.put("alice", SECRET_A)
    timer.join()
    assert store.get("alice") == SECRET_A
    blocker.close()
    store.close()


def test_busy_timeout_expiry_is_a_retryable_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteSecretStore(path, busy_timeout=0.1)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(SnapTradeSecretStoreError) as info:
        store.put("alice", SECRET_A)
    assert info.value.retryable is True
    blocker.execute("ROLLBACK")
    blocker.close()
    store.close()


def test_child_process_after_fork_uses_its_own_connection(tmp_path: Path, keyring: Keyring) -> None:
    store = SQLiteSecretStore(tmp_path / "s.db", keyring)
    store.put("parent", SECRET_A)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            store.put("child", SECRET_B)
            code = 0 if store.get("parent") == SECRET_A else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("child") == SECRET_B
    store.close()


def test_delete_leaves_no_trace_in_the_files(tmp_path: Path) -> None:
    # Unencrypted on purpose: any remnant of the deleted row would be readable.
    path = tmp_path / "plain.db"
    store = SQLiteSecretStore(path)
    store.put("alice", SECRET_A)
    store.put("bob", SECRET_B)
    assert SECRET_A.encode() in raw_bytes(path)
    assert store.delete("alice") is True
    raw = raw_bytes(path)
    assert SECRET_A.encode() not in raw
    assert SECRET_B.encode() in raw
    store.close()
