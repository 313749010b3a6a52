"""The server store for fleets of AIMS services: one PostgreSQL table (psycopg 3, optional extra).

Install with ``pip install 'aims-snaptrade[postgres]'``; psycopg is imported only when this store
is opened. A keyring is mandatory: secrets on a shared server are always encrypted.

Each statement runs in autocommit (one implicit transaction) and the session forces
``synchronous_commit = on``, so a write is durable on the server when the call returns, whatever
the database default is. Multi-row work (key rotation batches) uses an explicit transaction.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aims_snaptrade._sql.schema import PsycopgSession, StoreSchema, ensure_schema, permission_refusal
from aims_snaptrade.errors import (
    SnapTradeConfigurationError,
    SnapTradeSecretStoreError,
    SnapTradeStoreNotCreatedError,
)
from aims_snaptrade.redaction import register_secret
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

if TYPE_CHECKING:
    import psycopg

__all__ = ["DEFAULT_SCHEMA", "DEFAULT_TABLE", "PostgresSecretStore"]

DEFAULT_SCHEMA = "public"
DEFAULT_TABLE = "aims_snaptrade_user_secrets"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_T = TypeVar("_T")


def _one_line(exc: BaseException) -> str:
    # libpq messages span lines ("Is the server running...?"); errors must read as one log line.
    return " ".join(str(exc).split())


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise SnapTradeConfigurationError(
            "the PostgreSQL secret store needs psycopg 3: pip install 'aims-snaptrade[postgres]'"
        ) from None
    return psycopg


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
        self._psycopg = _import_psycopg()
        self._codec = SecretCodec(keyring)
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self.schema = schema
        self.table = table
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._closed = False
        self.target = self._describe_target()
        sql = self._psycopg.sql
        self._t = sql.Identifier(schema, table)
        try:
            with self._lock:
                conn = self._connection()
                if create:
                    self._create_table(conn)
                elif not ensure_schema(PsycopgSession(conn), self._schema(conn), where=self.target, create=False):
                    self._drop_connection()
                    raise SnapTradeStoreNotCreatedError(
                        f"the PostgreSQL secret store table {schema}.{table} at {self.target} does not exist yet; "
                        "the first client to start creates it (if its role may)"
                    )
        except SnapTradeConfigurationError:
            self._drop_connection()
            raise
        except self._psycopg.Error as exc:
            self._drop_connection()
            raise SnapTradeConfigurationError(
                f"cannot use the PostgreSQL secret store at {self.target}: {_one_line(exc)}; "
                "check SNAPTRADE_SECRET_STORE_URL, that the server is running and the role may "
                "create or use the table"
            ) from None

    def _describe_target(self) -> str:
        # Never show the password: describe the target from its parsed parts instead of the URL.
        try:
            parts = self._psycopg.conninfo.conninfo_to_dict(self._conninfo)
        except self._psycopg.Error:
            raise SnapTradeConfigurationError(
                "SNAPTRADE_SECRET_STORE_URL is not a valid PostgreSQL connection string"
            ) from None
        register_secret(parts.get("password"), kind="key")
        user = parts.get("user", "")
        host = parts.get("host", "localhost")
        port = parts.get("port", "5432")
        return f"postgresql://{user + '@' if user else ''}{host}:{port}/{parts.get('dbname', '')}"

    # -- connection management -------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise SnapTradeSecretStoreError(f"the PostgreSQL secret store at {self.target} is closed")
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed and not conn.broken:
            return conn
        # After fork the inherited socket is shared with the parent: abandon it, never close it.
        self._conn = None
        kwargs: dict[str, Any] = {"autocommit": True}
        parts = self._psycopg.conninfo.conninfo_to_dict(self._conninfo)
        if "connect_timeout" not in parts:
            kwargs["connect_timeout"] = max(1, round(self._connect_timeout))
        if "application_name" not in parts:
            kwargs["application_name"] = "aims-snaptrade-secrets"
        fresh: psycopg.Connection[Any] = self._psycopg.connect(self._conninfo, **kwargs)
        fresh.execute("SET synchronous_commit = on")
        self._conn, self._pid = fresh, os.getpid()
        return fresh

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    def _schema(self, conn: psycopg.Connection[Any]) -> StoreSchema:
        sql = self._psycopg.sql
        table = self._t.as_string(conn)
        index = sql.Identifier(self.table + "_pending").as_string(conn)
        return StoreSchema(
            store="secrets",
            table=self.table,
            version=1,
            create=(
                f"""CREATE TABLE IF NOT EXISTS {table} (
                    user_id text COLLATE "C" PRIMARY KEY,
                    key_version text NOT NULL,
                    ciphertext bytea NOT NULL,
                    rotation_pending_since timestamptz,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )""",
                f"CREATE INDEX IF NOT EXISTS {index} ON {table} (user_id) WHERE rotation_pending_since IS NOT NULL",
            ),
            prefix=sql.Identifier(self.schema).as_string(conn) + ".",
        )

    def _create_table(self, conn: psycopg.Connection[Any]) -> None:
        sql = self._psycopg.sql
        qualified = self._t.as_string(conn)
        schema = self._schema(conn)
        try:
            with conn.transaction():
                # Several services may start at once: serialise the DDL instead of racing on pg_type.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("aims_snaptrade:" + qualified,))
                # Check before creating: CREATE ... IF NOT EXISTS still demands the CREATE privilege,
                # which a least-privilege role using existing, current tables does not have.
                if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone() is None:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
                ensure_schema(PsycopgSession(conn), schema, where=self.target)
        except self._psycopg.errors.InsufficientPrivilege as exc:
            raise permission_refusal(schema, self.target, _one_line(exc)) from None

    def _run(self, op: Callable[[psycopg.Connection[Any]], _T], *, idempotent: bool) -> _T:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return op(self._connection())
                except self._psycopg.OperationalError as exc:
                    conn = self._conn
                    if conn is not None and (conn.closed or conn.broken):
                        self._drop_connection()
                        if idempotent and attempt == 1:
                            continue
                    raise SnapTradeSecretStoreError(
                        f"PostgreSQL secret store at {self.target} failed: {_one_line(exc)}", retryable=True
                    ) from None
                except self._psycopg.Error as exc:
                    raise SnapTradeSecretStoreError(
                        f"PostgreSQL secret store at {self.target} failed: {_one_line(exc)}"
                    ) from None
            raise AssertionError("unreachable")

    def _q(self, text: str) -> Any:
        return self._psycopg.sql.SQL(text).format(t=self._t)

    # -- SecretStore -----------------------------------------------------------------------

    def get(self, user_id: str) -> str | None:
        """See :meth:`SecretStore.get`."""
        check_user_id(user_id)
        query = self._q("SELECT key_version, ciphertext FROM {t} WHERE user_id = %s")
        row = self._run(lambda c: c.execute(query, (user_id,)).fetchone(), idempotent=True)
        if row is None:
            return None
        return self._codec.open(user_id, row[0], bytes(row[1]))

    def put(self, user_id: str, secret: str) -> None:
        """See :meth:`SecretStore.put`. The rotation marker, if any, is kept."""
        check_user_id(user_id)
        version, blob = self._codec.seal(user_id, check_secret(secret))
        query = self._q(
            """INSERT INTO {t} (user_id, key_version, ciphertext, updated_at) VALUES (%s, %s, %s, now())
               ON CONFLICT (user_id) DO UPDATE SET key_version = excluded.key_version,
                   ciphertext = excluded.ciphertext, updated_at = excluded.updated_at"""
        )
        self._run(lambda c: c.execute(query, (user_id, version, blob)), idempotent=True)

    def delete(self, user_id: str) -> bool:
        """See :meth:`SecretStore.delete`."""
        check_user_id(user_id)
        query = self._q("DELETE FROM {t} WHERE user_id = %s")
        return self._run(lambda c: c.execute(query, (user_id,)).rowcount > 0, idempotent=False)

    def user_ids(self) -> list[str]:
        """See :meth:`SecretStore.user_ids`."""
        query = self._q("SELECT user_id FROM {t}")
        return sorted(self._run(lambda c: [r[0] for r in c.execute(query).fetchall()], idempotent=True))

    def begin_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.begin_rotation`."""
        check_user_id(user_id)
        select = self._q("SELECT rotation_pending_since IS NOT NULL FROM {t} WHERE user_id = %s FOR UPDATE")
        update = self._q("UPDATE {t} SET rotation_pending_since = now() WHERE user_id = %s")

        def op(c: psycopg.Connection[Any]) -> str:
            with c.transaction():
                row = c.execute(select, (user_id,)).fetchone()
                if row is None:
                    return "missing"
                if row[0]:
                    return "pending"
                c.execute(update, (user_id,))
                return "begun"

        result = self._run(op, idempotent=False)
        if result == "missing":
            raise SnapTradeSecretStoreError(f"no secret is stored for user {user_id!r}; nothing to rotate")
        if result == "pending":
            raise already_pending(user_id)

    def complete_rotation(self, user_id: str, new_secret: str) -> None:
        """See :meth:`SecretStore.complete_rotation`. Stores the secret even if no marker exists."""
        check_user_id(user_id)
        version, blob = self._codec.seal(user_id, check_secret(new_secret))
        query = self._q(
            """INSERT INTO {t} (user_id, key_version, ciphertext, updated_at) VALUES (%s, %s, %s, now())
               ON CONFLICT (user_id) DO UPDATE SET key_version = excluded.key_version,
                   ciphertext = excluded.ciphertext, updated_at = excluded.updated_at,
                   rotation_pending_since = NULL"""
        )
        self._run(lambda c: c.execute(query, (user_id, version, blob)), idempotent=True)

    def abort_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.abort_rotation`."""
        check_user_id(user_id)
        query = self._q("UPDATE {t} SET rotation_pending_since = NULL WHERE user_id = %s")
        self._run(lambda c: c.execute(query, (user_id,)), idempotent=True)

    def pending_rotations(self) -> list[str]:
        """See :meth:`SecretStore.pending_rotations`."""
        query = self._q("SELECT user_id FROM {t} WHERE rotation_pending_since IS NOT NULL")
        return sorted(self._run(lambda c: [r[0] for r in c.execute(query).fetchall()], idempotent=True))

    # -- KeyRotatable ----------------------------------------------------------------------

    def reencrypt_batch(self, after: str | None, limit: int) -> BatchOutcome:
        """See :meth:`KeyRotatable.reencrypt_batch`."""
        # Keyset pagination in the table's own collation, so the primary key index serves it.
        if after is None:
            select = self._q("SELECT user_id, key_version, ciphertext FROM {t} ORDER BY user_id LIMIT %(limit)s")
        else:
            select = self._q(
                "SELECT user_id, key_version, ciphertext FROM {t} WHERE user_id > %(after)s "
                "ORDER BY user_id LIMIT %(limit)s"
            )
        update = self._q(
            "UPDATE {t} SET key_version = %s, ciphertext = %s, updated_at = now() "
            "WHERE user_id = %s AND key_version = %s AND ciphertext = %s"
        )

        def op(c: psycopg.Connection[Any]) -> BatchOutcome:
            with c.transaction():
                fetched = c.execute(select, {"after": after, "limit": limit}).fetchall()
                rows = [StoredRow(r[0], r[1], bytes(r[2])) for r in fetched]
                rewrites, already, failed, last = plan_reencrypt(self._codec, rows)
                applied = 0
                for rw in rewrites:
                    applied += c.execute(
                        update, (rw.new_version, rw.new_blob, rw.user_id, rw.old_version, rw.old_blob)
                    ).rowcount
            return outcome(rewrites, applied, already, failed, last, len(rows))

        # Safe to retry: each rewrite is a compare-and-swap and the batch is one transaction.
        return self._run(op, idempotent=True)

    def key_version_counts(self) -> dict[str, int]:
        """See :meth:`KeyRotatable.key_version_counts`."""
        query = self._q("SELECT key_version, count(*) FROM {t} GROUP BY key_version")
        return self._run(lambda c: {r[0]: int(r[1]) for r in c.execute(query).fetchall()}, idempotent=True)

    def current_key_version(self) -> str:
        """See :meth:`KeyRotatable.current_key_version`."""
        return self._codec.current_version

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __repr__(self) -> str:
        return f"PostgresSecretStore(target={self.target!r}, table={self.schema}.{self.table}, encrypted=True)"
