"""The server store for fleets of AIMS services: one PostgreSQL table (psycopg 3, optional extra).

Install with ``pip install 'aims-snaptrade[postgres]'``; psycopg is imported only when this store
is opened. A keyring is mandatory: secrets on a shared server are always encrypted.

Each statement runs in autocommit (one implicit transaction) and the session forces
``synchronous_commit = on``, so a write is durable on the server when the call returns, whatever
the database default is. Multi-row work (key rotation batches) uses an explicit transaction.
Connections, retries and errors: :mod:`aims_snaptrade._sql.database`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from aims_snaptrade._sql.database import Cursor, PostgresDatabase, open_schema
from aims_snaptrade._sql.schema import StoreSchema
from aims_snaptrade.errors import (
    SnapTradeConfigurationError,
    SnapTradeSecretStoreError,
    SnapTradeStoreNotCreatedError,
)
from aims_snaptrade.secrets._rows import (
    StoredRow,
    already_pending,
    check_secret,
    check_user_id,
    outcome,
    plan_reencrypt,
)
from aims_snaptrade.secrets.crypto import Keyring, SecretCodec
from aims_snaptrade.secrets.protocol import BatchOutcome

__all__ = ["DEFAULT_SCHEMA", "DEFAULT_TABLE", "PostgresSecretStore"]

DEFAULT_SCHEMA = "public"
DEFAULT_TABLE = "aims_snaptrade_user_secrets"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_T = TypeVar("_T")


class PostgresSecretStore:
    """User secrets in a PostgreSQL table, always encrypted, safe for many processes and hosts.

    The table (and schema) is created if absent; pass ``schema``/``table`` to isolate tenants or
    tests. Thread-safe: one connection per store (and per process after ``fork``) behind a lock.
    Reads and idempotent writes are retried once on a dropped connection; ``delete`` and
    ``begin_rotation`` are not (their answer would be wrong after a lost reply).
    """

    kind = "postgresql"
    persistent = True
    encrypted = True

    def __init__(
        self,
        conninfo: str,
        keyring: Keyring | None,
        *,
        schema: str = DEFAULT_SCHEMA,
        table: str = DEFAULT_TABLE,
        connect_timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        """Connect, create the table if needed, and check the keyring is present.

        With ``create=False`` (what ``aims-snaptrade verify`` uses) nothing is created: a missing
        table raises :class:`SnapTradeStoreNotCreatedError`.

        Raises :class:`SnapTradeConfigurationError` when psycopg is missing, the keyring is
        missing, an identifier is invalid or the database cannot be reached.
        """
        if keyring is None:
            raise SnapTradeConfigurationError(
                "the PostgreSQL secret store is always encrypted: set SNAPTRADE_ENCRYPTION_KEYS "
                "(generate one with `aims-snaptrade generate-key`)"
            )
        for label, name in (("schema", schema), ("table", table)):
            if not _IDENTIFIER.match(name):
                raise SnapTradeConfigurationError(
                    f"PostgreSQL secret store {label} {name!r} must be a plain identifier "
                    "(letters, digits, underscore; at most 63 characters)"
                )
        self._codec = SecretCodec(keyring)
        self.schema = schema
        self.table = table
        self._db = PostgresDatabase(
            conninfo,
            what="secret store",
            schema=schema,
            connect_timeout=connect_timeout,
            error=SnapTradeSecretStoreError,
            setting="SNAPTRADE_SECRET_STORE_URL",
            # Session-wide, so every autocommit statement waits for the flush whatever the role's default.
            on_connect=("SET synchronous_commit = on",),
        )
        self.target = self._db.target
        self._t = self._db.table(table)
        index = f'"{table}_pending"'
        schema_spec = StoreSchema(
            store="secrets",
            table=table,
            version=1,
            create=(
                f"""CREATE TABLE IF NOT EXISTS {self._t} (
                    user_id text COLLATE "C" PRIMARY KEY,
                    key_version text NOT NULL,
                    ciphertext bytea NOT NULL,
                    rotation_pending_since timestamptz,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )""",
                f"CREATE INDEX IF NOT EXISTS {index} ON {self._t} (user_id) WHERE rotation_pending_since IS NOT NULL",
            ),
        )
        if not open_schema(self._db, schema_spec, create=create) and not create:
            self._db.close()
            raise SnapTradeStoreNotCreatedError(
                f"the PostgreSQL secret store table {schema}.{table} at {self.target} does not exist yet; "
                "the first client to start creates it (if its role may)"
            )

    @property
    def _conn(self) -> Any:
        """This process's connection (tests end it to prove a dropped connection is survived)."""
        return self._db.connection()

    def _connection(self) -> Any:
        return self._db.connection()

    def _run(self, op: Callable[[Cursor], _T], *, idempotent: bool, transaction: bool = False) -> _T:
        return self._db.run(op, retry_dropped=idempotent, transaction=transaction)

    # -- SecretStore -----------------------------------------------------------------------

    def get(self, user_id: str) -> str | None:
        """See :meth:`SecretStore.get`."""
        check_user_id(user_id)
        query = f"SELECT key_version, ciphertext FROM {self._t} WHERE user_id = ?"
        row = self._run(lambda c: c.execute(query, (user_id,)).fetchone(), idempotent=True)
        if row is None:
            return None
        return self._codec.open(user_id, row[0], bytes(row[1]))

    def put(self, user_id: str, secret: str) -> None:
        """See :meth:`SecretStore.put`. The rotation marker, if any, is kept."""
        check_user_id(user_id)
        version, blob = self._codec.seal(user_id, check_secret(secret))
        query = f"""INSERT INTO {self._t} (user_id, key_version, ciphertext, updated_at) VALUES (?, ?, ?, now())
               ON CONFLICT (user_id) DO UPDATE SET key_version = excluded.key_version,
                   ciphertext = excluded.ciphertext, updated_at = excluded.updated_at"""
        self._run(lambda c: c.execute(query, (user_id, version, blob)), idempotent=True)

    def delete(self, user_id: str) -> bool:
        """See :meth:`SecretStore.delete`."""
        check_user_id(user_id)
        query = f"DELETE FROM {self._t} WHERE user_id = ?"
        return self._run(lambda c: bool(c.execute(query, (user_id,)).rowcount > 0), idempotent=False)

    def user_ids(self) -> list[str]:
        """See :meth:`SecretStore.user_ids`."""
        query = f"SELECT user_id FROM {self._t}"
        return sorted(self._run(lambda c: [r[0] for r in c.execute(query).fetchall()], idempotent=True))

    def begin_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.begin_rotation`."""
        check_user_id(user_id)
        select = f"SELECT rotation_pending_since IS NOT NULL FROM {self._t} WHERE user_id = ? FOR UPDATE"
        update = f"UPDATE {self._t} SET rotation_pending_since = now() WHERE user_id = ?"

        def op(c: Cursor) -> str:
            row = c.execute(select, (user_id,)).fetchone()
            if row is None:
                return "missing"
            if row[0]:
                return "pending"
            c.execute(update, (user_id,))
            return "begun"

        result = self._run(op, idempotent=False, transaction=True)
        if result == "missing":
            raise SnapTradeSecretStoreError(f"no secret is stored for user {user_id!r}; nothing to rotate")
        if result == "pending":
            raise already_pending(user_id)

    def complete_rotation(self, user_id: str, new_secret: str) -> None:
        """See :meth:`SecretStore.complete_rotation`. Stores the secret even if no marker exists."""
        check_user_id(user_id)
        version, blob = self._codec.seal(user_id, check_secret(new_secret))
        query = f"""INSERT INTO {self._t} (user_id, key_version, ciphertext, updated_at) VALUES (?, ?, ?, now())
               ON CONFLICT (user_id) DO UPDATE SET key_version = excluded.key_version,
                   ciphertext = excluded.ciphertext, updated_at = excluded.updated_at,
                   rotation_pending_since = NULL"""
        self._run(lambda c: c.execute(query, (user_id, version, blob)), idempotent=True)

    def abort_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.abort_rotation`."""
        check_user_id(user_id)
        query = f"UPDATE {self._t} SET rotation_pending_since = NULL WHERE user_id = ?"
        self._run(lambda c: c.execute(query, (user_id,)), idempotent=True)

    def pending_rotations(self) -> list[str]:
        """See :meth:`SecretStore.pending_rotations`."""
        query = f"SELECT user_id FROM {self._t} WHERE rotation_pending_since IS NOT NULL"
        return sorted(self._run(lambda c: [r[0] for r in c.execute(query).fetchall()], idempotent=True))

    # -- KeyRotatable ----------------------------------------------------------------------

    def reencrypt_batch(self, after: str | None, limit: int) -> BatchOutcome:
        """See :meth:`KeyRotatable.reencrypt_batch`."""
        # Keyset pagination in the table's own collation, so the primary key index serves it.
        select = f"SELECT user_id, key_version, ciphertext FROM {self._t} "
        select += "ORDER BY user_id LIMIT ?" if after is None else "WHERE user_id > ? ORDER BY user_id LIMIT ?"
        params = (limit,) if after is None else (after, limit)
        update = (
            f"UPDATE {self._t} SET key_version = ?, ciphertext = ?, updated_at = now() "
            "WHERE user_id = ? AND key_version = ? AND ciphertext = ?"
        )

        def op(c: Cursor) -> BatchOutcome:
            fetched = c.execute(select, params).fetchall()
            rows = [StoredRow(r[0], r[1], bytes(r[2])) for r in fetched]
            rewrites, already, failed, last = plan_reencrypt(self._codec, rows)
            applied = 0
            for rw in rewrites:
                applied += c.execute(
                    update, (rw.new_version, rw.new_blob, rw.user_id, rw.old_version, rw.old_blob)
                ).rowcount
            return outcome(rewrites, applied, already, failed, last, len(rows))

        # Safe to retry: each rewrite is a compare-and-swap and the batch is one transaction.
        return self._run(op, idempotent=True, transaction=True)

    def key_version_counts(self) -> dict[str, int]:
        """See :meth:`KeyRotatable.key_version_counts`."""
        query = f"SELECT key_version, count(*) FROM {self._t} GROUP BY key_version"
        return self._run(lambda c: {r[0]: int(r[1]) for r in c.execute(query).fetchall()}, idempotent=True)

    def current_key_version(self) -> str:
        """See :meth:`KeyRotatable.current_key_version`."""
        return self._codec.current_version

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._db.close()

    def __repr__(self) -> str:
        return f"PostgresSecretStore(target={self.target!r}, table={self.schema}.{self.table}, encrypted=True)"
