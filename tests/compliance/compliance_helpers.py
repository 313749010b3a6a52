"""Tampering with stored audit chains, as an attacker with write access to the tables would."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from typing import Any

import psycopg

from aims_snaptrade.compliance import AuditEvent, SQLAuditTrail

TABLE = "aims_snaptrade_audit"
POSTGRES_URL = os.environ.get("AIMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AUDIT_SECRET = "audit-key-for-tests-0123456789abcdef"


def fill(trail: SQLAuditTrail, n: int, *, user: str = "user-1") -> None:
    for i in range(n):
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id=user, account_id=f"acc-{i % 2}", status=200))


class Tamperer:
    """Runs raw SQL on the trail's tables with the backend's own driver (no library code)."""

    def __init__(self, trail: SQLAuditTrail, pg_url: str | None = None) -> None:
        self.trail = trail
        self.pg_url = pg_url
        self.table = trail.db.table(TABLE)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        statement = statement.replace("{t}", self.table)
        if self.pg_url is None:
            with closing(sqlite3.connect(self.trail.db.path, isolation_level=None)) as conn:
                return conn.execute(statement, params).fetchall()
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def shift_up(self, start: int, by: int = 1) -> None:
        # Two steps, so no intermediate state collides on the primary key.
        self.sql("UPDATE {t} SET seq = seq + 1000000 WHERE seq >= ?", (start,))
        self.sql("UPDATE {t} SET seq = seq - 1000000 + ? WHERE seq >= 1000000", (by,))

    def alter(self, seq: int) -> None:
        self.sql("UPDATE {t} SET status = 201 WHERE seq = ?", (seq,))

    def delete(self, seq: int) -> None:
        self.sql("DELETE FROM {t} WHERE seq = ?", (seq,))

    def insert_forged(self, seq: int) -> None:
        """A new record at ``seq`` (later ones move up), copied from a neighbour with a made-up MAC."""
        self.shift_up(seq)
        source = seq - 1 if seq > 1 else seq + 1
        self.sql(
            "INSERT INTO {t} SELECT ?, ts, kind, 'delete_snap_trade_user', user_ref, user_id, account_ref, account_id, "
            "outcome, status, request_id, attempts, duration_ms, detail, prev_mac, ? FROM {t} WHERE seq = ?",
            (seq, "f" * 64, source),
        )

    def insert_replay(self, seq: int, copy_of: int) -> None:
        """A genuine earlier record copied to ``seq`` (later ones move up)."""
        self.shift_up(seq)
        self.sql(
            "INSERT INTO {t} SELECT ?, ts, kind, action, user_ref, user_id, account_ref, account_id, outcome, status, "
            "request_id, attempts, duration_ms, detail, prev_mac, mac FROM {t} WHERE seq = ?",
            (seq, copy_of),
        )

    def swap(self, a: int, b: int) -> None:
        self.sql("UPDATE {t} SET seq = -1 WHERE seq = ?", (a,))
        self.sql("UPDATE {t} SET seq = ? WHERE seq = ?", (a, b))
        self.sql("UPDATE {t} SET seq = ? WHERE seq = -1", (b,))
