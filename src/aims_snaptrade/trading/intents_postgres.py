"""The order-intent journal for fleets: one PostgreSQL table (psycopg 3, the ``postgres`` extra).

Statements run in autocommit with ``synchronous_commit = on``, so an intent is durable on the
server when ``record`` returns. ``record`` is one ``INSERT ... ON CONFLICT DO NOTHING``: of two
replicas recording one ``client_order_id``, exactly one wins.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeOrderIntentStoreError
from aims_snaptrade.trading.models import OrderIntent

__all__ = ["DEFAULT_INTENT_TABLE", "PostgresOrderIntentStore"]

DEFAULT_INTENT_TABLE = "aims_snaptrade_order_intents"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresOrderIntentStore:
    """Order intents in a PostgreSQL table, created (with its schema) if absent; thread-safe."""

    kind = "postgresql"
    persistent = True

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "public",
        table: str = DEFAULT_INTENT_TABLE,
        connect_timeout: float = 5.0,
    ) -> None:
        for label, name in (("schema", schema), ("table", table)):
            if not _IDENTIFIER.match(name):
                raise SnapTradeConfigurationError(
                    f"PostgreSQL order-intent store {label} {name!r} must be a plain identifier"
                )
        try:
            import psycopg
            from psycopg import sql
        except ImportError:
            raise SnapTradeConfigurationError(
                "the PostgreSQL order-intent store needs psycopg 3: pip install 'aims-snaptrade[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self.schema, self.table = schema, table
        self._t = sql.Identifier(schema, table)
        self._sql = sql
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._closed = False
        try:
            self._execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            self._execute(
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {} (
                        client_order_id TEXT PRIMARY KEY,
                        account_id TEXT NOT NULL,
                        status TEXT NOT NULL,
                        brokerage_order_id TEXT,
                        created_at TIMESTAMPTZ NOT NULL,
                        body JSONB NOT NULL
                    )"""
                ).format(self._t)
            )
        except SnapTradeOrderIntentStoreError as exc:
            self.close()
            raise SnapTradeConfigurationError(f"cannot open the PostgreSQL order-intent store: {exc.message}") from None

    def _connection(self) -> Any:
        if self._closed:
            raise SnapTradeOrderIntentStoreError("the PostgreSQL order-intent store is closed")
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            self._conn = self._psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
            )
            self._conn.execute("SET synchronous_commit = on")
            self._pid = os.getpid()
        return self._conn

    def _execute(self, query: Any, params: tuple[object, ...] = ()) -> Any:
        with self._lock:
            try:
                return self._connection().execute(query, params)
            except self._psycopg.Error as exc:
                text = " ".join(str(exc).split())
                raise SnapTradeOrderIntentStoreError(f"PostgreSQL order-intent store failed: {text}") from None

    def record(self, intent: OrderIntent) -> bool:
        """See :meth:`~aims_snaptrade.trading.OrderIntentStore.record`."""
        cursor = self._execute(
            self._sql.SQL(
                "INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (client_order_id) DO NOTHING"
            ).format(self._t),
            (
                intent.client_order_id,
                intent.account_id,
                intent.status,
                intent.brokerage_order_id,
                intent.created_at,
                intent.to_json(),
            ),
        )
        return bool(cursor.rowcount == 1)

    def update(self, intent: OrderIntent) -> None:
        """See :meth:`~aims_snaptrade.trading.OrderIntentStore.update`."""
        cursor = self._execute(
            self._sql.SQL(
                "UPDATE {} SET account_id = %s, status = %s, brokerage_order_id = %s, body = %s "
                "WHERE client_order_id = %s"
            ).format(self._t),
            (intent.account_id, intent.status, intent.brokerage_order_id, intent.to_json(), intent.client_order_id),
        )
        if cursor.rowcount != 1:
            raise SnapTradeOrderIntentStoreError(f"No order intent {intent.client_order_id!r} is journaled to update.")

    def get(self, client_order_id: str) -> OrderIntent | None:
        """See :meth:`~aims_snaptrade.trading.OrderIntentStore.get`."""
        row = self._execute(
            self._sql.SQL("SELECT body::text FROM {} WHERE client_order_id = %s").format(self._t), (client_order_id,)
        ).fetchone()
        return OrderIntent.from_json(row[0]) if row else None

    def pending(self) -> list[OrderIntent]:
        """See :meth:`~aims_snaptrade.trading.OrderIntentStore.pending`."""
        rows = self._execute(
            self._sql.SQL("SELECT body::text FROM {} WHERE status = 'pending' ORDER BY created_at").format(self._t)
        ).fetchall()
        return [OrderIntent.from_json(body) for (body,) in rows]

    def claimed_order_ids(self, account_id: str) -> list[str]:
        """See :meth:`~aims_snaptrade.trading.OrderIntentStore.claimed_order_ids`."""
        rows = self._execute(
            self._sql.SQL(
                "SELECT brokerage_order_id FROM {} WHERE account_id = %s AND brokerage_order_id IS NOT NULL"
            ).format(self._t),
            (account_id,),
        ).fetchall()
        return [order_id for (order_id,) in rows]

    def drop(self) -> None:
        """Drop the table (tests that made their own)."""
        self._execute(self._sql.SQL("DROP TABLE IF EXISTS {}").format(self._t))

    def close(self) -> None:
        """Close the connection; further calls fail."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def __repr__(self) -> str:
        return f"PostgresOrderIntentStore(schema={self.schema!r}, table={self.table!r})"
