"""The embedded default store: one SQLite file, safe for several processes on one host.

* WAL journal, so readers never block the writer and a crash never leaves a torn write.
* ``synchronous=FULL``: a commit is fsynced before ``put`` returns (WAL's default, NORMAL, can
  lose the last commits on power loss, and a lost user secret cannot be recovered).
* Every write is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so two
  processes never deadlock upgrading a read lock. A busy lock is retried with short jittered
  sleeps until ``busy_timeout``: SQLite's own busy handler backs off to 100 ms sleeps, which
  under steady contention starves one writer (measured: 30 ms per write instead of 1 ms).
* The file is created ``0600``; SQLite gives its ``-wal``/``-shm`` files the same mode.
* Connections, busy retries, pragmas and errors: :mod:`aims_snaptrade._sql.database`.
* A ``store_meta`` row records whether the file is encrypted, so opening an encrypted file
  without the keyring fails at once instead of mixing plaintext rows into it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aims_snaptrade._sql.database import Cursor, SQLiteDatabase, open_schema
from aims_snaptrade._sql.schema import StoreSchema
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeSecretStoreError
from aims_snaptrade.secrets._rows import (
    StoredRow,
    already_pending,
    check_secret,
    check_user_id,
    outcome,
    plan_reencrypt,
)
from aims_snaptrade.secrets.crypto import PLAINTEXT_VERSION, Keyring, SecretCodec
from aims_snaptrade.secrets.protocol import BatchOutcome

if TYPE_CHECKING:
    import sqlite3

__all__ = ["SQLiteSecretStore"]

logger = logging.getLogger("aims_snaptrade.secrets")

_SCHEMA = StoreSchema(
    store="secrets",
    table="user_secrets",
    version=1,
    create=(
        """CREATE TABLE IF NOT EXISTS user_secrets (
        user_id TEXT PRIMARY KEY,
        key_version TEXT NOT NULL,
        ciphertext BLOB NOT NULL,
        rotation_pending_since REAL,
        updated_at REAL NOT NULL
    )""",
        "CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)
_SCHEMA_VERSION = "1"  # the store_meta row of release 0.1.0, kept for readers of that release


class SQLiteSecretStore:
    """User secrets in a SQLite file (stdlib ``sqlite3``), encrypted when a keyring is given.

    Without a keyring the store is unencrypted (``encrypted`` is ``False``): allowed for sandbox
    experiments, refused by production guardrails. Thread-safe: one connection behind a lock
    (SQLite serialises writers anyway). Safe across processes and across ``fork`` (a child
    process opens its own connection on first use).
    """

    kind = "sqlite"
    persistent = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        keyring: Keyring | None = None,
        *,
        busy_timeout: float = 10.0,
        create: bool = True,
    ) -> None:
        """Open (creating if needed) the store at ``path``.

        With ``create=False`` (what ``aims-snaptrade verify`` uses) nothing is created or changed:
        the file is opened read-only, its mode is checked against the keyring, and a missing file
        raises :class:`SnapTradeStoreNotCreatedError`. Such a store can only be read.

        Raises :class:`SnapTradeConfigurationError` when the file cannot be opened, is not a
        SQLite database, or is encrypted and no keyring was given.
        """
        self.path = Path(path)
        self._codec = SecretCodec(keyring)
        self._db = SQLiteDatabase(
            path,
            what="secret store",
            busy_timeout=busy_timeout,
            error=SnapTradeSecretStoreError,
            setting="SNAPTRADE_SECRET_STORE_URL",
            read_only=not create,
        )
        if not create:
            self._check_read_only()
            return
        open_schema(self._db, _SCHEMA, then=self._check_mode)
        if not self.encrypted:
            logger.warning(
                "SQLite secret store %s is UNENCRYPTED (no SNAPTRADE_ENCRYPTION_KEYS): sandbox use only",
                self.path,
            )

    @property
    def encrypted(self) -> bool:
        """``True`` when new secrets are encrypted (a keyring was given)."""
        return self._codec.encrypted

    def _check_mode(self, cur: Cursor) -> None:
        """Record the file's mode on creation; refuse plaintext writes into an encrypted file."""
        meta = dict(cur.execute("SELECT name, value FROM store_meta").fetchall())
        mode = meta.get("mode")
        wanted = "encrypted" if self.encrypted else "plaintext"
        if mode == "encrypted" and not self.encrypted:
            raise SnapTradeConfigurationError(
                f"the SQLite secret store {str(self.path)!r} is encrypted; set SNAPTRADE_ENCRYPTION_KEYS "
                "to its keyring (refusing to write unencrypted secrets into it)"
            )
        if mode is None:
            cur.execute("INSERT INTO store_meta VALUES ('schema_version', ?)", (_SCHEMA_VERSION,))
            cur.execute("INSERT INTO store_meta VALUES ('mode', ?)", (wanted,))
        elif mode == "plaintext" and self.encrypted:
            cur.execute("UPDATE store_meta SET value = 'encrypted' WHERE name = 'mode'")
            (legacy,) = cur.execute(
                "SELECT count(*) FROM user_secrets WHERE key_version = ?", (PLAINTEXT_VERSION,)
            ).fetchone()
            if legacy:
                logger.warning(
                    "SQLite secret store %s holds %d unencrypted secrets from before encryption was "
                    "configured; run `aims-snaptrade rotate-keys` to encrypt them",
                    self.path,
                    legacy,
                )

    def _check_read_only(self) -> None:
        """The checks of opening for writes, changing nothing."""
        try:
            open_schema(self._db, _SCHEMA, create=False)
            try:
                meta = dict(self._query("SELECT name, value FROM store_meta"))
            except SnapTradeSecretStoreError:
                raise SnapTradeConfigurationError(
                    f"{str(self.path)!r} is a SQLite file but not an aims-snaptrade secret store (no store_meta table)"
                ) from None
            if meta.get("mode") == "encrypted" and not self.encrypted:
                raise SnapTradeConfigurationError(
                    f"the SQLite secret store {str(self.path)!r} is encrypted; set SNAPTRADE_ENCRYPTION_KEYS to its "
                    "keyring"
                )
        except BaseException:
            self._db.close()
            raise

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (tests read its pragmas back)."""
        return self._db.connection()

    def _flush_journal(self) -> None:
        # The WAL still holds old page images (old ciphertexts, or plaintext from before keys were
        # configured) until a checkpoint; TRUNCATE copies them back and empties it. Best effort:
        # a long-lived reader elsewhere can make it return busy, and the next one will catch up.
        self._db.checkpoint()

    def _write(self) -> Any:
        # Every write durable (synchronous=FULL): a lost user secret cannot be recovered.
        return self._db.transaction(durable=True)

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.query(sql, params)

    # -- SecretStore -----------------------------------------------------------------------

    def get(self, user_id: str) -> str | None:
        """See :meth:`SecretStore.get`."""
        check_user_id(user_id)
        rows = self._query("SELECT key_version, ciphertext FROM user_secrets WHERE user_id = ?", (user_id,))
        if not rows:
            return None
        return self._codec.open(user_id, rows[0][0], rows[0][1])

    def put(self, user_id: str, secret: str) -> None:
        """See :meth:`SecretStore.put`. The rotation marker, if any, is kept."""
        check_user_id(user_id)
        version, blob = self._codec.seal(user_id, check_secret(secret))
        with self._write() as cur:
            cur.execute(
                """INSERT INTO user_secrets (user_id, key_version, ciphertext, updated_at)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (user_id) DO UPDATE SET key_version = excluded.key_version,
                       ciphertext = excluded.ciphertext, updated_at = excluded.updated_at""",
                (user_id, version, blob, time.time()),
            )

    def delete(self, user_id: str) -> bool:
        """See :meth:`SecretStore.delete`."""
        check_user_id(user_id)
        with self._write() as cur:
            removed = bool(cur.execute("DELETE FROM user_secrets WHERE user_id = ?", (user_id,)).rowcount > 0)
        if removed:
            self._flush_journal()
        return removed

    def user_ids(self) -> list[str]:
        """See :meth:`SecretStore.user_ids`."""
        return [r[0] for r in self._query("SELECT user_id FROM user_secrets ORDER BY user_id")]

    def begin_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.begin_rotation`."""
        check_user_id(user_id)
        with self._write() as cur:
            row = cur.execute(
                "SELECT rotation_pending_since FROM user_secrets WHERE user_id = ?", (user_id,)
            ).fetchone()
            if row is None:
                raise SnapTradeSecretStoreError(f"no secret is stored for user {user_id!r}; nothing to rotate")
            if row[0] is not None:
                raise already_pending(user_id)
            cur.execute("UPDATE user_secrets SET rotation_pending_since = ? WHERE user_id = ?", (time.time(), user_id))

    def complete_rotation(self, user_id: str, new_secret: str) -> None:
        """See :meth:`SecretStore.complete_rotation`. Stores the secret even if no marker exists."""
        check_user_id(user_id)
        version, blob = self._codec.seal(user_id, check_secret(new_secret))
        with self._write() as cur:
            cur.execute(
                """INSERT INTO user_secrets (user_id, key_version, ciphertext, updated_at)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (user_id) DO UPDATE SET key_version = excluded.key_version,
                       ciphertext = excluded.ciphertext, updated_at = excluded.updated_at,
                       rotation_pending_since = NULL""",
                (user_id, version, blob, time.time()),
            )

    def abort_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.abort_rotation`."""
        check_user_id(user_id)
        with self._write() as cur:
            cur.execute("UPDATE user_secrets SET rotation_pending_since = NULL WHERE user_id = ?", (user_id,))

    def pending_rotations(self) -> list[str]:
        """See :meth:`SecretStore.pending_rotations`."""
        rows = self._query("SELECT user_id FROM user_secrets WHERE rotation_pending_since IS NOT NULL ORDER BY user_id")
        return [r[0] for r in rows]

    # -- KeyRotatable ----------------------------------------------------------------------

    def reencrypt_batch(self, after: str | None, limit: int) -> BatchOutcome:
        """See :meth:`KeyRotatable.reencrypt_batch`."""
        with self._write() as cur:
            fetched = cur.execute(
                "SELECT user_id, key_version, ciphertext FROM user_secrets WHERE user_id > ? ORDER BY user_id LIMIT ?",
                ("" if after is None else after, limit),
            ).fetchall()
            rows = [StoredRow(r[0], r[1], bytes(r[2])) for r in fetched]
            rewrites, already, failed, last = plan_reencrypt(self._codec, rows)
            applied = 0
            for rw in rewrites:
                applied += cur.execute(
                    "UPDATE user_secrets SET key_version = ?, ciphertext = ? "
                    "WHERE user_id = ? AND key_version = ? AND ciphertext = ?",
                    (rw.new_version, rw.new_blob, rw.user_id, rw.old_version, rw.old_blob),
                ).rowcount
        if len(rows) < limit:
            # The end of the table: rotate_keys stops here, so scrub what the rewrites replaced.
            self._flush_journal()
        return outcome(rewrites, applied, already, failed, last, len(rows))

    def key_version_counts(self) -> dict[str, int]:
        """See :meth:`KeyRotatable.key_version_counts`."""
        rows = self._query("SELECT key_version, count(*) FROM user_secrets GROUP BY key_version")
        return {r[0]: int(r[1]) for r in rows}

    def current_key_version(self) -> str:
        """See :meth:`KeyRotatable.current_key_version`."""
        return self._codec.current_version

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteSecretStore(path={str(self.path)!r}, encrypted={self.encrypted})"
