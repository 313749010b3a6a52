"""The embedded default ledger: one SQLite file (stdlib ``sqlite3``), safe for several processes on one host.

WAL journal and ``synchronous=NORMAL``: unlike a lost user secret, a lost last commit of the
ledger only costs one repeated fetch, so the ledger does not pay for an fsync per user. Writes
take the lock up front (``BEGIN IMMEDIATE``) so two processes never deadlock upgrading a read lock;
a busy database is retried with jittered sleeps up to ``busy_timeout``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aims_snaptrade._sql.busy import retry_busy
from aims_snaptrade._sql.schema import SQLiteSession
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeStoreError
from aims_snaptrade.sync.ledger._sql import Execute, SQLLedger

__all__ = ["SQLiteSyncLedger"]

T = TypeVar("T")
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
        self._tables = {"users": "sync_users", "accounts": "sync_accounts", "batches": "sync_batches"}
        self._where = f"the SQLite sync ledger {self.path!r}"
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        if self.persistent and not Path(self.path).parent.is_dir():
            raise SnapTradeConfigurationError(
                f"the directory of the SQLite sync ledger {self.path!r} does not exist; create it or fix "
                "SNAPTRADE_SYNC_LEDGER_URL"
            )
        if self.persistent and not Path(self.path).exists():
            # Private before SQLite creates it with the umask's mode: it names users and accounts.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        try:
            self._transaction(self._create)
        except SnapTradeConfigurationError:  # a schema this release cannot use
            self._drop()
            raise
        except SnapTradeStoreError as exc:
            self._drop()
            raise SnapTradeConfigurationError(
                f"cannot open the SQLite sync ledger {self.path!r}: {exc.message}; check SNAPTRADE_SYNC_LEDGER_URL "
                "points at a writable SQLite file"
            ) from None

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise SnapTradeStoreError(f"the SQLite sync ledger {self.path!r} is closed")
        if self._conn is not None and self._pid != os.getpid():
            self._conn = None  # forked: the parent's connection is not ours to use
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=0.002, isolation_level=None, check_same_thread=False)
            if self.persistent:
                self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
                conn.execute("PRAGMA synchronous = NORMAL")
            # Zero freed space: an erased user's rows leave no old bytes in the file.
            conn.execute("PRAGMA secure_delete = ON")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _session(self) -> SQLiteSession:
        return SQLiteSession(self._connection())

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _retry(self, attempt: Callable[[], T]) -> T:
        return retry_busy(attempt, self._busy_timeout)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                conn = self._connection()
                return self._retry(lambda: conn.execute(sql, tuple(params)).fetchall())
            except sqlite3.Error as exc:
                raise SnapTradeStoreError(f"SQLite sync ledger {self.path!r} failed: {exc}") from None

    def _transaction(self, work: Callable[[Execute], T]) -> T:
        with self._lock:
            try:
                conn = self._connection()
                self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
                try:
                    result = work(lambda sql, params: conn.execute(sql, tuple(params)).rowcount)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise SnapTradeStoreError(f"SQLite sync ledger {self.path!r} failed: {exc}") from None

    def forget_user(self, user_id: str) -> int:
        """See :meth:`SyncLedger.forget_user`; also empties the WAL, which still holds the old pages."""
        removed = super().forget_user(user_id)
        if self.persistent:
            self._read("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        """See :meth:`SyncLedger.close`."""
        with self._lock:
            self._closed = True
            self._drop()

    def __repr__(self) -> str:
        return f"SQLiteSyncLedger({self.path!r})"
