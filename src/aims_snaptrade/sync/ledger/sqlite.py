"""The embedded default ledger: one SQLite file (stdlib ``sqlite3``), safe for several processes on one host.

WAL journal and ``synchronous=NORMAL``: unlike a lost user secret, a lost last commit of the
ledger only costs one repeated fetch, so the ledger does not pay for an fsync per user. Writes
take the lock up front (``BEGIN IMMEDIATE``) so two processes never deadlock upgrading a read lock;
a busy database is retried with jittered sleeps up to ``busy_timeout``
(:mod:`aims_snaptrade._sql.database`).
"""

from __future__ import annotations

import os

from aims_snaptrade._sql.database import SQLiteDatabase
from aims_snaptrade.sync.ledger._sql import SQLLedger

__all__ = ["SQLiteSyncLedger"]

MEMORY = ":memory:"


class SQLiteSyncLedger(SQLLedger):
    """Sync progress in a SQLite file; ``":memory:"`` keeps it in this process (tests only).

    Thread-safe (one connection behind a lock) and fork-safe (a child opens its own connection).
    """

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        """Open (creating if needed) the ledger at ``path``.

        Raises :class:`SnapTradeConfigurationError` when the file cannot be opened or is not a
        SQLite database.
        """
        self.path = str(path)
        self.persistent = self.path != MEMORY
        # The file is created owner-only: it names users and accounts.
        db = SQLiteDatabase(
            self.path, what="sync ledger", busy_timeout=busy_timeout, setting="SNAPTRADE_SYNC_LEDGER_URL"
        )
        super().__init__(db, prefix="sync_", durable=False)

    def __repr__(self) -> str:
        return f"SQLiteSyncLedger({self.path!r})"
