"""The server ledger for fleets: three PostgreSQL tables (psycopg 3, the ``postgres`` extra).

Every worker of a fleet shares it: leases keep one user on one worker at a time, and batch
progress lets any worker resume a batch another one started. Each method is one transaction.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aims_snaptrade._sql.schema import PsycopgSession, permission_refusal
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeStoreError
from aims_snaptrade.sync.ledger._sql import Execute, SQLLedger

__all__ = ["DEFAULT_PREFIX", "PostgresSyncLedger"]

DEFAULT_PREFIX = "aims_snaptrade_sync_"

T = TypeVar("T")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class PostgresSyncLedger(SQLLedger):
    """Sync progress in PostgreSQL tables ``<schema>.<prefix>users|accounts|batches``.

    Thread-safe (one connection per ledger, per process after ``fork``, behind a lock). The schema
    and tables are created if absent; pass ``schema``/``prefix`` to isolate tenants or tests.
    """

    kind = "postgresql"
    _placeholder = "%s"

    def __init__(
        self, conninfo: str, *, schema: str = "public", prefix: str = DEFAULT_PREFIX, connect_timeout: float = 5
    ) -> None:
        """Connect and create the tables if needed.

        Raises :class:`SnapTradeConfigurationError` when psycopg is missing, an identifier is
        invalid or the database cannot be reached.
        """
        for label, name in (("schema", schema), ("prefix", prefix)):
            if not _IDENTIFIER.match(name):
                raise SnapTradeConfigurationError(
                    f"PostgreSQL sync ledger {label} {name!r} must be a plain identifier (letters, digits, underscore)"
                )
        try:
            import psycopg
        except ImportError:
            raise SnapTradeConfigurationError(
                "the PostgreSQL sync ledger needs psycopg 3: pip install 'aims-snaptrade[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self.schema = schema
        self._tables = {name: f'"{schema}"."{prefix}{name}"' for name in ("users", "accounts", "batches")}
        self._schema_table, self._schema_prefix = f"{prefix}users", f'"{schema}".'
        self._where = f"the PostgreSQL sync ledger (schema {schema!r})"
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._closed = False
        try:
            self._transaction(self._create_schema)
        except SnapTradeConfigurationError:  # a schema this release cannot use
            self._drop()
            raise
        except SnapTradeStoreError as exc:
            self._drop()
            raise SnapTradeConfigurationError(
                f"cannot use the PostgreSQL sync ledger: {exc.message}; check SNAPTRADE_SYNC_LEDGER_URL, that the "
                "server is running and the role may create or use the tables"
            ) from None

    def _create_schema(self, execute: Execute) -> None:
        # Concurrent first starts of many workers race on CREATE ... IF NOT EXISTS; serialise them.
        execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._tables["users"],))
        execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"', ())
        try:
            self._create(execute)
        except self._psycopg.errors.InsufficientPrivilege as exc:
            raise permission_refusal(self._schema_spec(), self._where, _one_line(exc)) from None

    def _session(self) -> PsycopgSession:
        return PsycopgSession(self._connection())

    def _connection(self) -> Any:
        if self._closed:
            raise SnapTradeStoreError("the PostgreSQL sync ledger is closed")
        if self._conn is not None and (self._pid != os.getpid() or self._conn.closed):
            self._conn = None
        if self._conn is None:
            self._conn = self._psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
            )
            self._pid = os.getpid()
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                with self._connection().cursor() as cursor:
                    cursor.execute(sql, tuple(params))
                    return list(cursor.fetchall())
            except self._psycopg.Error as exc:
                self._drop()
                raise SnapTradeStoreError(f"PostgreSQL sync ledger failed: {_one_line(exc)}") from None

    def _transaction(self, work: Callable[[Execute], T]) -> T:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cursor:

                    def execute(sql: str, params: Sequence[Any]) -> int:
                        cursor.execute(sql, tuple(params))
                        return int(cursor.rowcount)

                    return work(execute)
            except self._psycopg.Error as exc:
                self._drop()
                raise SnapTradeStoreError(f"PostgreSQL sync ledger failed: {_one_line(exc)}") from None

    def close(self) -> None:
        """See :meth:`SyncLedger.close`."""
        with self._lock:
            self._closed = True
            self._drop()

    def __repr__(self) -> str:
        return f"PostgresSyncLedger(schema={self.schema!r})"
