"""The server ledger for fleets: three PostgreSQL tables (psycopg 3, the ``postgres`` extra).

Every worker of a fleet shares it: leases keep one user on one worker at a time, and batch
progress lets any worker resume a batch another one started. Each method is one transaction,
durable (``synchronous_commit=on``, the server's default the ledger has always used).
"""

from __future__ import annotations

import re

from aims_snaptrade._sql.database import PostgresDatabase
from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.sync.ledger._sql import SQLLedger

__all__ = ["DEFAULT_PREFIX", "PostgresSyncLedger"]

DEFAULT_PREFIX = "aims_snaptrade_sync_"

# 40, not 63: the prefix leaves room for the table names it starts.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


class PostgresSyncLedger(SQLLedger):
    """Sync progress in PostgreSQL tables ``<schema>.<prefix>users|accounts|batches``.

    Thread-safe (one connection per ledger, per process after ``fork``, behind a lock). The schema
    and tables are created if absent; pass ``schema``/``prefix`` to isolate tenants or tests.
    """

    kind = "postgresql"

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
        self.schema = schema
        db = PostgresDatabase(
            conninfo,
            what="sync ledger",
            schema=schema,
            connect_timeout=connect_timeout,
            setting="SNAPTRADE_SYNC_LEDGER_URL",
        )
        super().__init__(db, prefix=prefix, durable=True)

    def __repr__(self) -> str:
        return f"PostgresSyncLedger(schema={self.schema!r})"
