"""Claims in a SQLite file: several receiver processes on one host (stdlib ``sqlite3``).

Each claim is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken first, so the read and
the insert are atomic across processes), durable before it answers: a claim or completion lost
with the machine would let a webhook be handled twice. Expiry uses the wall clock, which
processes share. Connections, busy retries and errors: :mod:`aims_snaptrade._sql.database`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from aims_snaptrade._sql.database import Cursor, SQLiteDatabase, open_schema
from aims_snaptrade._sql.schema import StoreSchema
from aims_snaptrade.errors import SnapTradeWebhookDedupeStoreError
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
        self._clock = clock
        self._claims = 0
        self._db = SQLiteDatabase(
            path, what="webhook dedupe store", busy_timeout=busy_timeout, error=SnapTradeWebhookDedupeStoreError
        )
        open_schema(self._db, _SCHEMA)

    def _write(self, op: Callable[[Cursor, float], _T]) -> _T:
        with self._db.transaction(durable=True) as cur:
            return op(cur, self._clock())

    def claim(self, webhook_id: str, token: str, lease_seconds: float) -> ClaimOutcome:
        """See :meth:`WebhookDedupeStore.claim`."""

        def op(cur: Cursor, now: float) -> ClaimOutcome:
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                cur.execute("DELETE FROM webhook_claims WHERE expires_at <= ?", (now,))
            row = cur.execute(
                "SELECT state FROM webhook_claims WHERE webhook_id = ? AND expires_at > ?", (webhook_id, now)
            ).fetchone()
            if row is not None:
                return "processed" if row[0] == "done" else "in_progress"
            cur.execute(
                "INSERT OR REPLACE INTO webhook_claims VALUES (?, 'processing', ?, ?)",
                (webhook_id, token, now + lease_seconds),
            )
            return "claimed"

        return self._write(op)

    def complete(self, webhook_id: str, token: str, retention_seconds: float) -> bool:
        """See :meth:`WebhookDedupeStore.complete`."""
        return self._write(
            lambda cur, now: bool(
                cur.execute(
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
            lambda cur, now: bool(
                cur.execute(
                    "DELETE FROM webhook_claims WHERE webhook_id = ? AND token = ? AND state = 'processing'",
                    (webhook_id, token),
                ).rowcount
                == 1
            )
        )

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteWebhookDedupeStore({str(self.path)!r})"
