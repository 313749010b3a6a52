"""Claims in a PostgreSQL table, shared by every replica (psycopg 3, the ``postgres`` extra).

A claim is one statement: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the existing claim has
expired, so taking a new id and taking over an expired one are both atomic under the row lock.
Expiry uses the server's clock (``clock_timestamp()``), which every replica shares. Connections
and errors: :mod:`aims_snaptrade._sql.database`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from aims_snaptrade._sql.database import Cursor, PostgresDatabase, open_schema
from aims_snaptrade._sql.schema import StoreSchema
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeWebhookDedupeStoreError
from aims_snaptrade.webhooks.dedupe.protocol import ClaimOutcome

__all__ = ["DEFAULT_SCHEMA", "DEFAULT_TABLE", "PostgresWebhookDedupeStore"]

DEFAULT_SCHEMA = "public"
DEFAULT_TABLE = "aims_snaptrade_webhook_claims"

_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresWebhookDedupeStore:
    """Webhook claims in ``schema.table`` (created if absent) of the database ``conninfo`` names."""

    kind = "postgresql"
    shared = True

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        table: str = DEFAULT_TABLE,
        connect_timeout: float = 5.0,
    ) -> None:
        """Connect and create the table; :class:`SnapTradeConfigurationError` if that fails."""
        for label, name in (("schema", schema), ("table", table)):
            if not _IDENTIFIER.match(name):
                raise SnapTradeConfigurationError(f"invalid PostgreSQL {label} name {name!r} for the webhook store")
        self.schema, self.table = schema, table
        self._db = PostgresDatabase(
            conninfo,
            what="webhook dedupe store",
            schema=schema,
            connect_timeout=connect_timeout,
            error=SnapTradeWebhookDedupeStoreError,
            refusal="cannot open",
        )
        self._t = self._db.table(table)
        create = (
            f"CREATE TABLE IF NOT EXISTS {self._t} (webhook_id TEXT PRIMARY KEY, state TEXT NOT NULL, "
            "token TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)"
        )
        open_schema(self._db, StoreSchema(store="webhook_claims", table=table, version=1, create=(create,)))

    def _run(self, op: Callable[[Cursor], _T]) -> _T:
        # Each call is one statement or a read after it: safe to run again once on a dropped connection.
        return self._db.run(op, retry_dropped=True)

    def claim(self, webhook_id: str, token: str, lease_seconds: float) -> ClaimOutcome:
        """See :meth:`WebhookDedupeStore.claim`."""

        def op(cur: Cursor) -> ClaimOutcome:
            taken = cur.execute(
                f"INSERT INTO {self._t} AS c VALUES (?, 'processing', ?, clock_timestamp() + make_interval(secs => ?)) "
                "ON CONFLICT (webhook_id) DO UPDATE SET state = 'processing', token = EXCLUDED.token, "
                "expires_at = EXCLUDED.expires_at WHERE c.expires_at <= clock_timestamp() RETURNING 1",
                (webhook_id, token, lease_seconds),
            ).fetchone()
            if taken is not None:
                return "claimed"
            row = cur.execute(f"SELECT state FROM {self._t} WHERE webhook_id = ?", (webhook_id,)).fetchone()
            return "processed" if row is not None and row[0] == "done" else "in_progress"

        return self._run(op)

    def complete(self, webhook_id: str, token: str, retention_seconds: float) -> bool:
        """See :meth:`WebhookDedupeStore.complete`."""
        sql = (
            f"UPDATE {self._t} SET state = 'done', expires_at = clock_timestamp() + make_interval(secs => ?) "
            "WHERE webhook_id = ? AND token = ? AND state = 'processing'"
        )
        return self._run(lambda cur: bool(cur.execute(sql, (retention_seconds, webhook_id, token)).rowcount == 1))

    def release(self, webhook_id: str, token: str) -> bool:
        """See :meth:`WebhookDedupeStore.release`."""
        sql = f"DELETE FROM {self._t} WHERE webhook_id = ? AND token = ? AND state = 'processing'"
        return self._run(lambda cur: bool(cur.execute(sql, (webhook_id, token)).rowcount == 1))

    def purge_expired(self) -> int:
        """Delete expired rows (run it from a periodic job); returns how many."""
        purge = f"DELETE FROM {self._t} WHERE expires_at <= clock_timestamp()"
        return self._run(lambda cur: int(cur.execute(purge).rowcount))

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._db.close()

    def __repr__(self) -> str:
        return f"PostgresWebhookDedupeStore(table={self.schema}.{self.table})"
