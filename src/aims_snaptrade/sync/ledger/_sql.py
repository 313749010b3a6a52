"""The ledger's SQL, shared by the SQLite and PostgreSQL ledgers (both speak this dialect).

Statements are written with ``?`` placeholders and ``{users}``/``{accounts}``/``{batches}`` table
slots; a backend supplies the quoted table names and its
:class:`~aims_snaptrade._sql.database.Database` (connections, busy retries, durability, errors).
Times are Unix seconds in ``DOUBLE PRECISION`` columns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aims_snaptrade import _ids
from aims_snaptrade._sql.database import Cursor, Database, open_schema
from aims_snaptrade._sql.schema import StoreSchema
from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.sync.records import (
    AccountRecord,
    AccountStatus,
    LedgerChange,
    SyncOutcome,
    UserRecord,
)

__all__ = ["Execute", "SQLLedger"]

T = TypeVar("T")
Execute = Callable[[str, Sequence[Any]], int]
"""Run one statement in the current transaction; returns the number of rows it changed."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {users} (
        user_id TEXT PRIMARY KEY,
        accounts_synced_at DOUBLE PRECISION,
        dirty_at DOUBLE PRECISION,
        last_synced_at DOUBLE PRECISION,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS {accounts} (
        user_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        connection_id TEXT,
        status TEXT NOT NULL,
        holdings_synced_at DOUBLE PRECISION,
        activities_synced_at DOUBLE PRECISION,
        activities_cursor TEXT,
        cursor_ids TEXT,
        holdings_dirty_at DOUBLE PRECISION,
        activities_dirty_at DOUBLE PRECISION,
        PRIMARY KEY (user_id, account_id)
    )""",
    """CREATE TABLE IF NOT EXISTS {batches} (
        batch_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        finished_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (batch_id, user_id)
    )""",
)

_UPSERT_USER_DIRTY = """INSERT INTO {users} AS cur (user_id, dirty_at) VALUES (?, ?)
    ON CONFLICT (user_id) DO UPDATE SET dirty_at = excluded.dirty_at"""

_SAVE_USER = """INSERT INTO {users} AS cur (user_id, accounts_synced_at, last_synced_at) VALUES (?, ?, ?)
    ON CONFLICT (user_id) DO UPDATE SET
        accounts_synced_at = COALESCE(excluded.accounts_synced_at, cur.accounts_synced_at),
        last_synced_at = excluded.last_synced_at,
        dirty_at = CASE WHEN excluded.accounts_synced_at IS NOT NULL AND cur.dirty_at <= ? THEN NULL
                        ELSE cur.dirty_at END"""

_SAVE_ACCOUNT = """INSERT INTO {accounts} AS cur (user_id, account_id, connection_id, status, holdings_synced_at,
        activities_synced_at, activities_cursor, cursor_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (user_id, account_id) DO UPDATE SET
        connection_id = COALESCE(excluded.connection_id, cur.connection_id),
        status = excluded.status,
        holdings_synced_at = COALESCE(excluded.holdings_synced_at, cur.holdings_synced_at),
        activities_synced_at = COALESCE(excluded.activities_synced_at, cur.activities_synced_at),
        activities_cursor = COALESCE(excluded.activities_cursor, cur.activities_cursor),
        cursor_ids = COALESCE(excluded.cursor_ids, cur.cursor_ids),
        holdings_dirty_at = CASE WHEN excluded.holdings_synced_at IS NOT NULL AND cur.holdings_dirty_at <= ?
                                 THEN NULL ELSE cur.holdings_dirty_at END,
        activities_dirty_at = CASE WHEN excluded.activities_synced_at IS NOT NULL AND cur.activities_dirty_at <= ?
                                   THEN NULL ELSE cur.activities_dirty_at END"""

_DUE_USERS = """SELECT u.user_id FROM {users} u WHERE u.user_id > ? AND (
        u.accounts_synced_at IS NULL OR u.accounts_synced_at <= ? OR u.dirty_at IS NOT NULL
        OR EXISTS (SELECT 1 FROM {accounts} a WHERE a.user_id = u.user_id AND a.status = 'active' AND (
            a.holdings_synced_at IS NULL OR a.holdings_synced_at <= ?
            OR a.activities_synced_at IS NULL OR a.activities_synced_at <= ?
            OR a.holdings_dirty_at IS NOT NULL OR a.activities_dirty_at IS NOT NULL)))
    ORDER BY u.user_id LIMIT ?"""

# The user's row, locked for the save's transaction (PostgreSQL: an erasure waits for the save, or
# the save finds no row); a leased sync's user has one unless it was erased meanwhile.
_STILL_THERE = "UPDATE {users} SET lease_until = lease_until WHERE user_id = ?"

_ACQUIRE = """INSERT INTO {users} AS cur (user_id, lease_owner, lease_until) VALUES (?, ?, ?)
    ON CONFLICT (user_id) DO UPDATE SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until
    WHERE cur.lease_owner IS NULL OR cur.lease_until IS NULL OR cur.lease_until <= ?
        OR cur.lease_owner = excluded.lease_owner"""


_MARKS: dict[LedgerChange, tuple[str, tuple[str, ...]]] = {
    LedgerChange.HOLDINGS_DIRTY: (
        "UPDATE {accounts} SET holdings_dirty_at = ? WHERE user_id = ? AND account_id = ? AND status <> 'gone'",
        ("at", "user", "account"),
    ),
    LedgerChange.ACTIVITIES_DIRTY: (
        "UPDATE {accounts} SET activities_dirty_at = ? WHERE user_id = ? AND account_id = ? AND status <> 'gone'",
        ("at", "user", "account"),
    ),
    LedgerChange.ACCOUNT_REMOVED: (
        "UPDATE {accounts} SET status = 'gone' WHERE user_id = ? AND account_id = ?",
        ("user", "account"),
    ),
    LedgerChange.CONNECTION_BROKEN: (
        "UPDATE {accounts} SET status = 'stale' WHERE user_id = ? AND connection_id = ? AND status <> 'gone'",
        ("user", "connection"),
    ),
    LedgerChange.CONNECTION_FIXED: (
        "UPDATE {accounts} SET status = 'active', holdings_dirty_at = ?, activities_dirty_at = ? "
        "WHERE user_id = ? AND connection_id = ? AND status <> 'gone'",
        ("at", "at", "user", "connection"),
    ),
    LedgerChange.CONNECTION_REMOVED: (
        "UPDATE {accounts} SET status = 'gone' WHERE user_id = ? AND connection_id = ?",
        ("user", "connection"),
    ),
    LedgerChange.ACCOUNTS_DIRTY: ("", ()),
}
"""Each change's statement (``""``: none, only the listing mark) and the values it takes."""
_ALSO_LIST = frozenset({LedgerChange.CONNECTION_FIXED, LedgerChange.ACCOUNT_REMOVED})
"""Changes that also ask for a new listing (a removed account: see what else changed)."""


def _rowcount(cur: Cursor, sql: str, params: Sequence[Any]) -> int:
    return int(cur.execute(sql, params).rowcount)


def check_id(name: str, value: object) -> str:
    """A valid id (the library's one rule: bounded, no control characters), or a typed error naming it."""
    return _ids.check_id(value, name)


class SQLLedger:
    """The ledger's logic over three tables of ``db``, named ``<prefix>users|accounts|batches``.

    ``durable`` says whether each write is flushed to disk before it returns (see the backends).
    """

    kind = "sql"
    persistent = True

    def __init__(self, db: Database, *, prefix: str, durable: bool) -> None:
        self._db = db
        self._durable = durable
        self._tables = {name: db.table(prefix + name) for name in ("users", "accounts", "batches")}
        schema = StoreSchema(
            store="sync_ledger",
            table=f"{prefix}users",
            version=1,
            create=tuple(self._sql(statement) for statement in SCHEMA),
        )
        open_schema(db, schema)

    def _sql(self, template: str) -> str:
        return template.format(**self._tables)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.query(sql, params)

    def _transaction(self, work: Callable[[Execute], T]) -> T:
        with self._db.transaction(durable=self._durable) as cur:
            return work(lambda sql, params: _rowcount(cur, sql, params))

    def close(self) -> None:
        """Release connections and files. Idempotent."""
        self._db.close()

    # --- the ledger ------------------------------------------------------------------------------

    def load_user(self, user_id: str) -> UserRecord | None:
        """See :meth:`SyncLedger.load_user`."""
        check_id("user_id", user_id)
        users = self._read(
            self._sql("SELECT accounts_synced_at, dirty_at, last_synced_at FROM {users} WHERE user_id = ?"), (user_id,)
        )
        if not users:
            return None
        rows = self._read(
            self._sql(
                "SELECT account_id, connection_id, status, holdings_synced_at, activities_synced_at, "
                "activities_cursor, cursor_ids, holdings_dirty_at, activities_dirty_at FROM {accounts} "
                "WHERE user_id = ? ORDER BY account_id"
            ),
            (user_id,),
        )
        accounts = tuple(
            AccountRecord(
                account_id=r[0],
                connection_id=r[1],
                status=AccountStatus(r[2]),
                holdings_synced_at=r[3],
                activities_synced_at=r[4],
                activities_cursor=r[5],
                cursor_ids=tuple(json.loads(r[6])) if r[6] else (),
                holdings_dirty_at=r[7],
                activities_dirty_at=r[8],
            )
            for r in rows
        )
        synced, dirty, last = users[0]
        return UserRecord(user_id, synced, dirty, last, accounts)

    def save_sync(self, outcome: SyncOutcome) -> None:
        """See :meth:`SyncLedger.save_sync`."""
        check_id("user_id", outcome.user_id)
        started = outcome.started_at

        def work(execute: Execute) -> None:
            if outcome.leased and not execute(self._sql(_STILL_THERE), (outcome.user_id,)):
                return  # erased while the sync ran: writing would bring the person's rows back
            execute(
                self._sql(_SAVE_USER),
                (outcome.user_id, outcome.accounts_synced_at, outcome.finished_at, started),
            )
            for update in outcome.accounts:
                ids = None if update.cursor_ids is None else json.dumps(list(update.cursor_ids))
                execute(
                    self._sql(_SAVE_ACCOUNT),
                    (
                        outcome.user_id,
                        check_id("account_id", update.account_id),
                        update.connection_id,
                        AccountStatus(update.status).value,
                        update.holdings_synced_at,
                        update.activities_synced_at,
                        update.activities_cursor,
                        ids,
                        started,
                        started,
                    ),
                )
            for account_id in outcome.removed:
                execute(
                    self._sql("UPDATE {accounts} SET status = 'gone' WHERE user_id = ? AND account_id = ?"),
                    (outcome.user_id, account_id),
                )

        self._transaction(work)

    def mark(
        self,
        user_id: str,
        change: LedgerChange,
        at: float,
        account_id: str | None = None,
        connection_id: str | None = None,
    ) -> None:
        """See :meth:`SyncLedger.mark`."""
        check_id("user_id", user_id)
        change = LedgerChange(change)
        if change in (LedgerChange.HOLDINGS_DIRTY, LedgerChange.ACTIVITIES_DIRTY, LedgerChange.ACCOUNT_REMOVED):
            check_id("account_id", account_id)
        if change in (LedgerChange.CONNECTION_BROKEN, LedgerChange.CONNECTION_FIXED, LedgerChange.CONNECTION_REMOVED):
            check_id("connection_id", connection_id)

        def dirty_user(execute: Execute) -> None:
            execute(self._sql(_UPSERT_USER_DIRTY), (user_id, at))

        def work(execute: Execute) -> None:
            if change is LedgerChange.USER_REMOVED:
                execute(self._sql("DELETE FROM {accounts} WHERE user_id = ?"), (user_id,))
                execute(self._sql("DELETE FROM {users} WHERE user_id = ?"), (user_id,))
                return
            sql, params = _MARKS[change]
            values = {"at": at, "user": user_id, "account": account_id, "connection": connection_id}
            changed = execute(self._sql(sql), tuple(values[p] for p in params)) if sql else 0
            if not changed or change in _ALSO_LIST:
                # New accounts, repaired connections and marks on accounts the ledger has not
                # seen yet all need a fresh listing of the user's connections and accounts.
                dirty_user(execute)

        self._transaction(work)

    def due_users(self, holdings_before: float, activities_before: float, after: str | None, limit: int) -> list[str]:
        """See :meth:`SyncLedger.due_users`."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise SnapTradeValidationError(f"limit must be a positive integer, got {limit!r}.")
        rows = self._read(
            self._sql(_DUE_USERS), (after or "", holdings_before, holdings_before, activities_before, limit)
        )
        return [r[0] for r in rows]

    def acquire_lease(self, user_id: str, owner: str, now: float, until: float) -> bool:
        """See :meth:`SyncLedger.acquire_lease`."""
        check_id("user_id", user_id)
        check_id("owner", owner)
        return bool(self._transaction(lambda execute: execute(self._sql(_ACQUIRE), (user_id, owner, until, now))))

    def release_lease(self, user_id: str, owner: str) -> None:
        """See :meth:`SyncLedger.release_lease`."""
        sql = "UPDATE {users} SET lease_owner = NULL, lease_until = NULL WHERE user_id = ? AND lease_owner = ?"
        self._transaction(lambda execute: execute(self._sql(sql), (user_id, owner)))

    def finish_in_batch(self, batch_id: str, user_id: str, at: float) -> None:
        """See :meth:`SyncLedger.finish_in_batch`."""
        check_id("batch_id", batch_id)
        check_id("user_id", user_id)
        sql = "INSERT INTO {batches} (batch_id, user_id, finished_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
        self._transaction(lambda execute: execute(self._sql(sql), (batch_id, user_id, at)))

    def finished_in_batch(self, batch_id: str, user_ids: Sequence[str]) -> set[str]:
        """See :meth:`SyncLedger.finished_in_batch`."""
        check_id("batch_id", batch_id)
        found: set[str] = set()
        ids = list(user_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            sql = f"SELECT user_id FROM {{batches}} WHERE batch_id = ? AND user_id IN ({marks})"  # noqa: S608
            found.update(r[0] for r in self._read(self._sql(sql), (batch_id, *chunk)))
        return found

    def forget_batch(self, batch_id: str) -> int:
        """See :meth:`SyncLedger.forget_batch`."""
        check_id("batch_id", batch_id)
        sql = "DELETE FROM {batches} WHERE batch_id = ?"
        return self._transaction(lambda execute: execute(self._sql(sql), (batch_id,)))

    def forget_user(self, user_id: str) -> int:
        """See :meth:`SyncLedger.forget_user`."""
        check_id("user_id", user_id)
        statements = (
            "DELETE FROM {accounts} WHERE user_id = ?",
            "DELETE FROM {batches} WHERE user_id = ?",
            "DELETE FROM {users} WHERE user_id = ?",
        )
        removed = self._transaction(lambda execute: sum(execute(self._sql(sql), (user_id,)) for sql in statements))
        self._db.checkpoint()  # SQLite's WAL still holds the erased rows' old pages
        return removed
