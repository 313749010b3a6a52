"""Claims in a PostgreSQL table, shared by every replica (psycopg 3, the ``postgres`` extra).

A claim is one statement: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the existing claim has
expired, so taking a new id and taking over an expired one are both atomic under the row lock.
Expiry uses the server's clock (``clock_timestamp()``), which every replica shares.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from aims_snaptrade._sql.schema import PsycopgSession, StoreSchema, ensure_schema, permission_refusal
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeWebhookDedupeStoreError
from aims_snaptrade.redaction import redact
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
        try:
            import psycopg
        except ImportError:  # pragma: no cover - depends on the environment
            raise SnapTradeConfigurationError(
                "the PostgreSQL webhook dedupe store needs psycopg 3: pip install 'aims-snaptrade[postgres]'"
            ) from None
        self._psycopg: Any = psycopg
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self.schema, self.table = schema, table
        self._t = psycopg.sql.Identifier(schema, table)
        try:
            self._run(self._create)
        except SnapTradeConfigurationError:  # a schema this release cannot use
            self._drop()
            raise
        except SnapTradeWebhookDedupeStoreError as exc:
            raise SnapTradeConfigurationError(
                f"cannot open the PostgreSQL webhook dedupe store: {exc.message}"
            ) from None

    def _q(self, text: str) -> Any:
        return self._psycopg.sql.SQL(text).format(t=self._t, schema=self._psycopg.sql.Identifier(self.schema))

    def _create(self, conn: Any) -> None:
        table = self._t.as_string(conn)
        schema = StoreSchema(
            store="webhook_claims",
            table=self.table,
            version=1,
            create=(
                f"CREATE TABLE IF NOT EXISTS {table} (webhook_id TEXT PRIMARY KEY, state TEXT NOT NULL, "
                "token TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)",
            ),
            prefix=self._psycopg.sql.Identifier(self.schema).as_string(conn) + ".",
        )
        try:
            with conn.transaction():
                # Replicas start at once: serialise the DDL (IF NOT EXISTS alone is not race-free).
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("aims_snaptrade:" + table,))
                if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone() is None:
                    conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {schema}"))
                ensure_schema(PsycopgSession(conn), schema, where="the PostgreSQL webhook dedupe store")
        except self._psycopg.errors.InsufficientPrivilege as exc:
            raise permission_refusal(
                schema, "the PostgreSQL webhook dedupe store", " ".join(str(exc).split())
            ) from None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self._psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
            )
        return self._conn

    def _run(self, op: Callable[[Any], _T]) -> _T:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return op(self._connection())
                except self._psycopg.OperationalError as exc:
                    # A dropped connection: every statement here is safe to run again once.
                    self._drop()
                    if attempt == 2:
                        raise self._fail(exc) from None
                except self._psycopg.Error as exc:
                    raise self._fail(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _fail(self, exc: BaseException) -> SnapTradeWebhookDedupeStoreError:
        text = " ".join(str(exc).split())
        return SnapTradeWebhookDedupeStoreError(redact(f"the PostgreSQL webhook dedupe store failed: {text}"))

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def claim(self, webhook_id: str, token: str, lease_seconds: float) -> ClaimOutcome:
        """See :meth:`WebhookDedupeStore.claim`."""

        def op(conn: Any) -> ClaimOutcome:
            taken = conn.execute(
                self._q(
                    "INSERT INTO {t} AS c VALUES (%s, 'processing', %s, clock_timestamp() + make_interval(secs => %s)) "
                    "ON CONFLICT (webhook_id) DO UPDATE SET state = 'processing', token = EXCLUDED.token, "
                    "expires_at = EXCLUDED.expires_at WHERE c.expires_at <= clock_timestamp() RETURNING 1"
                ),
                (webhook_id, token, lease_seconds),
            ).fetchone()
            if taken is not None:
                return "claimed"
            row = conn.execute(self._q("SELECT state FROM {t} WHERE webhook_id = %s"), (webhook_id,)).fetchone()
            return "processed" if row is not None and row[0] == "done" else "in_progress"

        return self._run(op)

    def complete(self, webhook_id: str, token: str, retention_seconds: float) -> bool:
        """See :meth:`WebhookDedupeStore.complete`."""
        return bool(
            self._run(
                lambda conn: (
                    conn.execute(
                        self._q(
                            "UPDATE {t} SET state = 'done', expires_at = clock_timestamp() + make_interval(secs => %s) "
                            "WHERE webhook_id = %s AND token = %s AND state = 'processing'"
                        ),
                        (retention_seconds, webhook_id, token),
                    ).rowcount
                    == 1
                )
            )
        )

    def release(self, webhook_id: str, token: str) -> bool:
        """See :meth:`WebhookDedupeStore.release`."""
        return bool(
            self._run(
                lambda conn: (
                    conn.execute(
                        self._q("DELETE FROM {t} WHERE webhook_id = %s AND token = %s AND state = 'processing'"),
                        (webhook_id, token),
                    ).rowcount
                    == 1
                )
            )
        )

    def purge_expired(self) -> int:
        """Delete expired rows (run it from a periodic job); returns how many."""
        purge = self._q("DELETE FROM {t} WHERE expires_at <= clock_timestamp()")
        return int(self._run(lambda conn: conn.execute(purge).rowcount))

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            self._drop()

    def __repr__(self) -> str:
        return f"PostgresWebhookDedupeStore(table={self.schema}.{self.table})"
