"""The order-intent journal: what a store of order intents must do, and the embedded defaults.

Every order is journaled (:class:`~aims_snaptrade.trading.models.OrderIntent`) durably *before*
its request leaves, and settled when the answer (or a reconciliation) says what happened. A
journal survives the process: intents left ``pending`` by a crash or a lost answer are listed on
the next start and settled by ``reconcile_pending()``.

* :class:`OrderIntentStore` is the Protocol; run
  :class:`aims_snaptrade.testing.order_intent_store_conformance.OrderIntentStoreConformance`
  against your own store.
* :class:`SQLiteOrderIntentStore` (default, one file, several processes on one host),
  :class:`~aims_snaptrade.trading.intents_postgres.PostgresOrderIntentStore` (fleets) and
  :class:`MemoryOrderIntentStore` (tests only).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeOrderIntentStoreError
from aims_snaptrade.trading.models import OrderIntent

__all__ = ["MemoryOrderIntentStore", "OrderIntentStore", "SQLiteOrderIntentStore"]

_T = TypeVar("_T")


@runtime_checkable
class OrderIntentStore(Protocol):
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

    def close(self) -> None:
        """Forget nothing, refuse further calls."""
        self._closed = True


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS order_intents (
        client_order_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        status TEXT NOT NULL,
        brokerage_order_id TEXT,
        created_at REAL NOT NULL,
        body TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS order_intents_status ON order_intents (status, created_at)",
    "CREATE INDEX IF NOT EXISTS order_intents_account ON order_intents (account_id, brokerage_order_id)",
)


def _row(intent: OrderIntent) -> tuple[str, str, str, str | None, float, str]:
    return (
        intent.client_order_id,
        intent.account_id,
        intent.status,
        intent.brokerage_order_id,
        intent.created_at.timestamp(),
        intent.to_json(),
    )


class SQLiteOrderIntentStore:
    """Intents in a SQLite file (stdlib ``sqlite3``): WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE``.

    A write is fsynced before it returns, so an intent recorded before a SIGKILL is there after
    the restart. Thread-safe (one connection behind a lock), safe for several processes on one
    host, and across ``fork`` (a child opens its own connection).
    """

    kind = "sqlite"
    persistent = True

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        if not self.path.parent.is_dir():
            raise SnapTradeConfigurationError(
                f"the directory of the SQLite order-intent store {str(self.path)!r} does not exist; create it "
                "or fix SNAPTRADE_ORDER_INTENT_STORE_URL"
            )
        try:
            with self._write() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
        except SnapTradeOrderIntentStoreError as exc:
            self.close()
            raise SnapTradeConfigurationError(
                f"cannot open the SQLite order-intent store {str(self.path)!r}: {exc.message}"
            ) from None

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise SnapTradeOrderIntentStoreError(f"the SQLite order-intent store {str(self.path)!r} is closed")
        if self._conn is None or self._pid != os.getpid():
            # After fork the inherited connection belongs to the parent: abandon it, open our own.
            conn = sqlite3.connect(self.path, timeout=0.002, isolation_level=None, check_same_thread=False)
            self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = FULL")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _retry_busy(self, attempt: Callable[[], _T]) -> _T:
        # SQLite's own busy handler sleeps in coarse steps; short jittered retries keep writers fair.
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.0005
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                    raise
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.01)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise SnapTradeOrderIntentStoreError(
                f"SQLite order-intent store {str(self.path)!r} failed: {exc}"
            ) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            conn = self._connection()
            self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[str, ...]]:
        with self._lock, self._errors():
            conn = self._connection()
            return self._retry_busy(lambda: conn.execute(sql, params).fetchall())

    def record(self, intent: OrderIntent) -> bool:
        """See :meth:`OrderIntentStore.record`."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO order_intents VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (client_order_id) DO NOTHING",
                _row(intent),
            )
            return cursor.rowcount == 1

    def update(self, intent: OrderIntent) -> None:
        """See :meth:`OrderIntentStore.update`."""
        coid, account, status, order_id, _, body = _row(intent)
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE order_intents SET account_id = ?, status = ?, brokerage_order_id = ?, body = ? "
                "WHERE client_order_id = ?",
                (account, status, order_id, body, coid),
            ).rowcount
            if changed != 1:
                raise _missing(coid)

    def get(self, client_order_id: str) -> OrderIntent | None:
        """See :meth:`OrderIntentStore.get`."""
        rows = self._query("SELECT body FROM order_intents WHERE client_order_id = ?", (client_order_id,))
        return OrderIntent.from_json(rows[0][0]) if rows else None

    def pending(self) -> list[OrderIntent]:
        """See :meth:`OrderIntentStore.pending`."""
        rows = self._query("SELECT body FROM order_intents WHERE status = 'pending' ORDER BY created_at")
        return [OrderIntent.from_json(body) for (body,) in rows]

    def claimed_order_ids(self, account_id: str) -> list[str]:
        """See :meth:`OrderIntentStore.claimed_order_ids`."""
        rows = self._query(
            "SELECT brokerage_order_id FROM order_intents WHERE account_id = ? AND brokerage_order_id IS NOT NULL",
            (account_id,),
        )
        return [order_id for (order_id,) in rows]

    def close(self) -> None:
        """Close the connection; further calls fail."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def __repr__(self) -> str:
        return f"SQLiteOrderIntentStore({str(self.path)!r})"
