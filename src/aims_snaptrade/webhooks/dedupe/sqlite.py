"""Claims in a SQLite file: several receiver processes on one host (stdlib ``sqlite3``).

Each claim is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken first, so the read and
the insert are atomic across processes). Expiry uses the wall clock, which processes share.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from aims_snaptrade._sql.schema import SQLiteSession, StoreSchema, ensure_schema
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeWebhookDedupeStoreError
from aims_snaptrade.webhooks.dedupe.protocol import ClaimOutcome

__all__ = ["SQLiteWebhookDedupeStore"]

_T = TypeVar("_T")
_SCHEMA = StoreSchema(
    store="webhook_claims",
    table="webhook_claims",
    version=1,
    create=(
        """CREATE TABLE IF NOT EXISTS webhook_claims (
    webhook_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
)""",
    ),
)
_PURGE_EVERY = 256


class SQLiteWebhookDedupeStore:
    """Webhook claims in the SQLite file at ``path`` (created ``0600`` if absent)."""

    kind = "sqlite"
    shared = False  # one host only

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        """Open (creating if needed) the store; :class:`SnapTradeConfigurationError` if it cannot."""
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._claims = 0
        if not self.path.parent.is_dir():
            raise SnapTradeConfigurationError(
                f"the directory of the SQLite webhook dedupe store {str(self.path)!r} does not exist; create it"
            )
        try:
            if not self.path.exists():
                self.path.touch(mode=0o600)
            where = f"the SQLite webhook dedupe store {str(self.path)!r}"
            self._write(lambda conn, _now: ensure_schema(SQLiteSession(conn), _SCHEMA, where=where))
        except SnapTradeConfigurationError:  # a schema this release cannot use
            self.close()
            raise
        except (sqlite3.Error, SnapTradeWebhookDedupeStoreError) as exc:
            self.close()
            raise SnapTradeConfigurationError(
                f"cannot open the SQLite webhook dedupe store {str(self.path)!r}: {getattr(exc, 'message', exc)}"
            ) from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked child opens its own
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _write(self, op: Callable[[sqlite3.Connection, float], _T]) -> _T:
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = op(conn, self._clock())
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise SnapTradeWebhookDedupeStoreError(f"the SQLite webhook dedupe store failed: {exc}") from None

    def claim(self, webhook_id: str, token: str, lease_seconds: float) -> ClaimOutcome:
        """See :meth:`WebhookDedupeStore.claim`."""

        def op(conn: sqlite3.Connection, now: float) -> ClaimOutcome:
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                conn.execute("DELETE FROM webhook_claims WHERE expires_at <= ?", (now,))
            row = conn.execute(
                "SELECT state FROM webhook_claims WHERE webhook_id = ? AND expires_at > ?", (webhook_id, now)
            ).fetchone()
            if row is not None:
                return "processed" if row[0] == "done" else "in_progress"
            conn.execute(
                "INSERT OR REPLACE INTO webhook_claims VALUES (?, 'processing', ?, ?)",
                (webhook_id, token, now + lease_seconds),
            )
            return "claimed"

        return self._write(op)

    def complete(self, webhook_id: str, token: str, retention_seconds: float) -> bool:
        """See :meth:`WebhookDedupeStore.complete`."""
        return self._write(
            lambda conn, now: (
                conn.execute(
                    "UPDATE webhook_claims SET state = 'done', expires_at = ? "
                    "WHERE webhook_id = ? AND token = ? AND state = 'processing'",
                    (now + retention_seconds, webhook_id, token),
                ).rowcount
                == 1
            )
        )

    def release(self, webhook_id: str, token: str) -> bool:
        """See :meth:`WebhookDedupeStore.release`."""
        return self._write(
            lambda conn, now: (
                conn.execute(
                    "DELETE FROM webhook_claims WHERE webhook_id = ? AND token = ? AND state = 'processing'",
                    (webhook_id, token),
                ).rowcount
                == 1
            )
        )

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"SQLiteWebhookDedupeStore({str(self.path)!r})"
