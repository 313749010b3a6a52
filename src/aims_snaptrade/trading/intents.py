"""The order-intent journal: what a store of order intents must do, and the embedded defaults.

Every order is journaled (:class:`~aims_snaptrade.trading.models.OrderIntent`) durably *before*
its request leaves, and settled when the answer (or a reconciliation) says what happened. A
journal survives the process: intents left ``pending`` by a crash or a lost answer are listed on
the next start and settled by ``reconcile_pending()``.

* :class:`OrderIntentStore` is the Protocol; run
  :class:`aims_snaptrade.testing.order_intent_store_conformance.OrderIntentStoreConformance`
  against your own store.
* :class:`SQLiteOrderIntentStore` (default, one file, several processes on one host),
  :class:`PostgresOrderIntentStore` (fleets), both :class:`SQLOrderIntentStore` over the
  SQL stores' database layer (:mod:`aims_snaptrade._sql.database`), and :class:`MemoryOrderIntentStore` (tests only).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from aims_snaptrade._ids import check_id
from aims_snaptrade._sql.database import Database, PostgresDatabase, SQLiteDatabase, open_schema
from aims_snaptrade._sql.schema import StoreSchema
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeOrderIntentStoreError
from aims_snaptrade.trading.models import OrderIntent

__all__ = [
    "MemoryOrderIntentStore",
    "OrderIntentStore",
    "PostgresOrderIntentStore",
    "SQLOrderIntentStore",
    "SQLiteOrderIntentStore",
]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@runtime_checkable
class OrderIntentStore(Protocol):  # pragma: no mutate block (docs/testing.md: Protocols)
    """Durable, thread-safe journal of order intents keyed by ``client_order_id``.

    Contract (checked by the conformance suite):

    * ``record`` and ``update`` are durable when they return.
    * ``record`` is atomic: of two records of one ``client_order_id`` (even from two processes)
      exactly one returns ``True``; the journal is what makes a confirmation single-use.
    * ``get`` returns exactly what the last ``record``/``update`` wrote.
    * ``pending`` lists every intent whose status is ``pending``, oldest first.
    * Failures raise :class:`~aims_snaptrade.errors.SnapTradeOrderIntentStoreError`.

    Stores declare ``kind`` (a short name) and ``persistent`` (``False`` if a restart forgets).
    """

    kind: str
    persistent: bool

    def record(self, intent: OrderIntent) -> bool:
        """Journal a new intent; ``False`` (and nothing written) if its ``client_order_id`` exists."""
        ...

    def update(self, intent: OrderIntent) -> None:
        """Overwrite the journaled intent with the same ``client_order_id`` (it must exist)."""
        ...

    def get(self, client_order_id: str) -> OrderIntent | None:
        """The journaled intent, or ``None``."""
        ...

    def pending(self) -> list[OrderIntent]:
        """Every intent still ``pending``, oldest first."""
        ...

    def claimed_order_ids(self, account_id: str) -> list[str]:
        """Brokerage order ids already attributed to settled intents of ``account_id``."""
        ...

    def close(self) -> None:
        """Release connections; further calls fail."""
        ...


def _missing(client_order_id: str) -> SnapTradeOrderIntentStoreError:
    return SnapTradeOrderIntentStoreError(f"No order intent {client_order_id!r} is journaled to update.")


class MemoryOrderIntentStore:
    """Intents in a dict: for tests only (``persistent`` is ``False``)."""

    kind = "memory"
    persistent = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, OrderIntent] = {}
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise SnapTradeOrderIntentStoreError("the memory order-intent store is closed")

    def record(self, intent: OrderIntent) -> bool:
        """See :meth:`OrderIntentStore.record`."""
        with self._lock:
            self._check()
            if intent.client_order_id in self._rows:
                return False
            self._rows[intent.client_order_id] = intent
            return True

    def update(self, intent: OrderIntent) -> None:
        """See :meth:`OrderIntentStore.update`."""
        with self._lock:
            self._check()
            if intent.client_order_id not in self._rows:
                raise _missing(intent.client_order_id)
            self._rows[intent.client_order_id] = intent

    def get(self, client_order_id: str) -> OrderIntent | None:
        """See :meth:`OrderIntentStore.get`."""
        with self._lock:
            self._check()
            return self._rows.get(client_order_id)

    def pending(self) -> list[OrderIntent]:
        """See :meth:`OrderIntentStore.pending`."""
        with self._lock:
            self._check()
            found = [i for i in self._rows.values() if i.status == "pending"]
        return sorted(found, key=lambda i: i.created_at)

    def claimed_order_ids(self, account_id: str) -> list[str]:
        """See :meth:`OrderIntentStore.claimed_order_ids`."""
        with self._lock:
            self._check()
            return [
                i.brokerage_order_id
                for i in self._rows.values()
                if i.account_id == account_id and i.brokerage_order_id is not None
            ]

    def export_user(self, user_id: str) -> list[dict[str, object]]:
        """Every intent of the user, oldest first."""
        check_id(user_id)
        with self._lock:
            self._check()
            mine = [i for i in self._rows.values() if i.user_id == user_id]
        return [i.model_dump(mode="json") for i in sorted(mine, key=lambda i: i.created_at)]

    def forget_user(self, user_id: str) -> int:
        """Delete every intent of the user."""
        check_id(user_id)
        with self._lock:
            self._check()
            doomed = [k for k, i in self._rows.items() if i.user_id == user_id]
            for key in doomed:
                del self._rows[key]
        return len(doomed)

    def close(self) -> None:
        """Forget nothing, refuse further calls."""
        self._closed = True


_TABLE = "aims_snaptrade_order_intents"
_SETTING = "SNAPTRADE_ORDER_INTENT_STORE_URL"


def _schema(table: str) -> StoreSchema:
    return StoreSchema(
        store="order_intents",
        table=table,
        version=1,
        create=(
            f"""CREATE TABLE IF NOT EXISTS {{t:{table}}} (
                client_order_id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL,
                status TEXT NOT NULL,
                brokerage_order_id TEXT,
                created_at {{real}} NOT NULL,
                body TEXT NOT NULL
            )""",
            f"CREATE INDEX IF NOT EXISTS {table}_status ON {{t:{table}}} (status, created_at)",
            f"CREATE INDEX IF NOT EXISTS {table}_account ON {{t:{table}}} (account_id, brokerage_order_id)",
        ),
    )


class SQLOrderIntentStore:
    """Intents in one SQL table, on the SQL stores' database layer (SQLite or PostgreSQL).

    Every write is one durable transaction (SQLite ``synchronous=FULL`` under ``BEGIN IMMEDIATE``;
    PostgreSQL ``synchronous_commit=on``), so an intent recorded before a SIGKILL is there after
    the restart. ``record`` is one ``INSERT ... ON CONFLICT DO NOTHING``: of two processes
    recording one ``client_order_id``, exactly one wins. Thread-safe and fork-safe. ``db`` raises
    :class:`~aims_snaptrade.errors.SnapTradeOrderIntentStoreError` (callers branch on it).
    """

    def __init__(self, db: Database, table: str = _TABLE) -> None:
        self._db = db
        self.kind = db.kind
        self.persistent = db.persistent
        self._t = db.table(table)
        open_schema(db, _schema(table))

    def record(self, intent: OrderIntent) -> bool:
        """See :meth:`OrderIntentStore.record`."""
        with self._db.transaction(durable=True) as cur:
            inserted = cur.execute(
                f"INSERT INTO {self._t} VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (client_order_id) DO NOTHING",
                (
                    intent.client_order_id,
                    intent.account_id,
                    intent.status,
                    intent.brokerage_order_id,
                    intent.created_at.timestamp(),
                    intent.to_json(),
                ),
            )
            return bool(inserted.rowcount == 1)

    def update(self, intent: OrderIntent) -> None:
        """See :meth:`OrderIntentStore.update`."""
        with self._db.transaction(durable=True) as cur:
            changed = cur.execute(
                f"UPDATE {self._t} SET account_id = ?, status = ?, brokerage_order_id = ?, body = ? "
                "WHERE client_order_id = ?",
                (intent.account_id, intent.status, intent.brokerage_order_id, intent.to_json(), intent.client_order_id),
            )
            if changed.rowcount != 1:
                raise _missing(intent.client_order_id)

    def get(self, client_order_id: str) -> OrderIntent | None:
        """See :meth:`OrderIntentStore.get`."""
        rows = self._db.query(f"SELECT body FROM {self._t} WHERE client_order_id = ?", (client_order_id,))
        return OrderIntent.from_json(rows[0][0]) if rows else None

    def pending(self) -> list[OrderIntent]:
        """See :meth:`OrderIntentStore.pending`."""
        rows = self._db.query(f"SELECT body FROM {self._t} WHERE status = 'pending' ORDER BY created_at")
        return [OrderIntent.from_json(body) for (body,) in rows]

    def claimed_order_ids(self, account_id: str) -> list[str]:
        """See :meth:`OrderIntentStore.claimed_order_ids`."""
        rows = self._db.query(
            f"SELECT brokerage_order_id FROM {self._t} WHERE account_id = ? AND brokerage_order_id IS NOT NULL",
            (account_id,),
        )
        return [str(order_id) for (order_id,) in rows]

    def export_user(self, user_id: str) -> list[dict[str, object]]:
        """Every intent of the user, oldest first (for ``export_user``; see docs/compliance.md)."""
        return [intent.model_dump(mode="json") for intent in self._of_user(user_id)]

    def forget_user(self, user_id: str) -> int:
        """Delete every intent of the user; the files keep no copy (SQLite: WAL truncated)."""
        doomed = [intent.client_order_id for intent in self._of_user(user_id)]
        with self._db.transaction(durable=True) as cur:
            for client_order_id in doomed:
                cur.execute(f"DELETE FROM {self._t} WHERE client_order_id = ?", (client_order_id,))
        if doomed:
            self._db.checkpoint()
        return len(doomed)

    def _of_user(self, user_id: str) -> list[OrderIntent]:
        # The user id lives in the journaled body only (no column, no schema change): an erasure
        # reads every intent once, which is rare enough to pay for.
        check_id(user_id)
        rows = self._db.query(f"SELECT body FROM {self._t} ORDER BY created_at")
        return [intent for intent in (OrderIntent.from_json(body) for (body,) in rows) if intent.user_id == user_id]

    def close(self) -> None:
        """Close the connection; further calls fail."""
        self._db.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._db.description!r})"


class SQLiteOrderIntentStore(SQLOrderIntentStore):
    """The embedded default: intents in a SQLite file (WAL), safe for several processes on one host."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        super().__init__(
            SQLiteDatabase(
                path,
                what="order-intent store",
                busy_timeout=busy_timeout,
                error=SnapTradeOrderIntentStoreError,
                setting=_SETTING,
            )
        )


class PostgresOrderIntentStore(SQLOrderIntentStore):
    """Intents in a PostgreSQL table for fleets (psycopg 3, the ``postgres`` extra)."""

    def __init__(
        self, conninfo: str, *, schema: str = "public", table: str = _TABLE, connect_timeout: float = 5.0
    ) -> None:
        if not _IDENTIFIER.match(table):
            raise SnapTradeConfigurationError(f"PostgreSQL order-intent table {table!r} must be a plain identifier")
        super().__init__(
            PostgresDatabase(
                conninfo,
                what="order-intent store",
                schema=schema,
                connect_timeout=connect_timeout,
                error=SnapTradeOrderIntentStoreError,
                setting=_SETTING,
            ),
            table,
        )

    def drop(self) -> None:
        """Drop the table (tests that made their own)."""
        with self._db.transaction(durable=True) as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self._t}")
