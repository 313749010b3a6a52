"""The two databases every SQL store runs on: SQLite (embedded) and PostgreSQL (fleets).

Each store (consent, audit, webhook claims, sync ledger, ...) writes its own SQL against either;
this module holds the connection handling they share and hides the three things that differ:
placeholders (``?`` here, ``%s`` for psycopg), column types in DDL, and how a writer takes the
lock that serialises it (``BEGIN IMMEDIATE`` in SQLite, a row lock in PostgreSQL). Both are
thread-safe (one connection behind a lock) and fork-safe (a child process opens its own
connection on first use).

Durability: a ``durable`` transaction is flushed to disk before ``commit`` returns (SQLite
``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``); a non-durable one survives a crash
of this process (it is in the OS's hands, or the server's) but may be lost with the machine.

Failures surface as the store's own error class (``error=``, a
:class:`~aims_snaptrade.errors.SnapTradeStoreError`), ``retryable`` when another connection held
the database busy or the server connection dropped; a store that cannot be opened is a
:class:`~aims_snaptrade.errors.SnapTradeConfigurationError` naming the setting to fix.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aims_snaptrade._sql.busy import is_busy, retry_busy
from aims_snaptrade._sql.schema import PsycopgSession, SQLiteSession, StoreSchema, ensure_schema, permission_refusal
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeStoreError, SnapTradeStoreNotCreatedError
from aims_snaptrade.redaction import redact, register_secret

__all__ = ["Cursor", "Database", "PostgresDatabase", "SQLiteDatabase", "open_schema"]

_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Cursor(Protocol):
    """What a transaction body uses: ``execute`` with ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the result has ``fetchone``/``fetchall``/``rowcount``."""
        ...


class Database(Protocol):
    """A SQL database as a SQL store sees it."""

    kind: str
    persistent: bool
    description: str
    setting: str | None
    """The environment variable holding the store's URL, named in refusals (``None``: its URL)."""
    row_lock: str
    """Appended to a ``SELECT`` to lock the rows it reads until commit (``""`` where writers are serialised anyway)."""

    def ddl(self, statement: str) -> str:
        """``statement`` with ``{id}`` (auto-increment key), ``{real}`` and ``{t:name}`` filled in."""
        ...

    def table(self, name: str) -> str:
        """The qualified name of one of our tables."""
        ...

    def setup(self, schema: StoreSchema, *, create: bool = True, then: Callable[[Cursor], None] | None = None) -> int:
        """Create ``schema``'s tables, or migrate them to its version, serialised against other processes.

        ``then`` runs in the same transaction (a store's own checks of what it found). With
        ``create=False`` nothing is written: the version is only checked. Returns the version
        found (0: no tables yet). Raises :class:`~aims_snaptrade.errors.SnapTradeSchemaVersionError`
        for tables this release cannot use (see :mod:`aims_snaptrade._sql.schema`).
        """
        ...

    def connection(self) -> Any:
        """This process's open connection (for checks that read its settings back)."""
        ...

    def transaction(self, *, durable: bool, lock: str | None = None) -> Any:
        """A context manager yielding a :class:`Cursor` inside one write transaction.

        ``lock`` names a table whose single row (``id = 1``) the transaction locks first, so
        writers that take it run one at a time (a no-op in SQLite, where ``BEGIN IMMEDIATE``
        already serialises every writer of the file).
        """
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return its rows."""
        ...

    def snapshot(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """Run read-only statements in one transaction, so they all see the same state."""
        ...

    def checkpoint(self) -> None:
        """Make deleted rows unrecoverable from the files (SQLite: truncate the WAL)."""
        ...

    def close(self) -> None:
        """Release the connection. Idempotent."""
        ...


class _OneConnectionPerProcess:
    """What both databases share: one connection behind a lock, opened again in a forked child."""

    _lock: threading.RLock
    _conn: Any
    _pid: int
    _closed: bool

    def close(self) -> None:
        """Release the connection. Idempotent; a child never closes the connection it inherited."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()


class _SQLiteCursor:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, tuple(params))


class SQLiteDatabase(_OneConnectionPerProcess):
    """A SQLite file (WAL, ``0600``), or ``:memory:`` for tests (one process only)."""

    kind = "sqlite"
    row_lock = ""  # BEGIN IMMEDIATE already holds the file's write lock

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        what: str,
        busy_timeout: float = 10.0,
        error: type[SnapTradeStoreError] = SnapTradeStoreError,
        setting: str | None = None,
        read_only: bool = False,
    ) -> None:
        """Open (creating if needed) the file at ``path``.

        ``what`` names the store in errors, ``error`` is the class its failures raise and
        ``setting`` the environment variable holding its URL (named in the fix of a refusal).
        ``read_only`` (what ``aims-snaptrade verify`` uses) creates and changes nothing: a missing
        file raises :class:`~aims_snaptrade.errors.SnapTradeStoreNotCreatedError`.
        """
        self.memory = str(path) == ":memory:"
        self.path = Path(path)
        self.persistent = not self.memory
        self.description = f"SQLite {what} {str(path)!r}"
        self.setting = setting
        self._what = what
        self._error = error
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        self._synchronous = ""
        self._read_only = read_only
        if not self.memory:
            if not self.path.parent.is_dir():
                raise SnapTradeConfigurationError(
                    f"the directory of the {self.description} does not exist; create it or fix {setting or 'its URL'}"
                )
            if not self.path.exists() and read_only:
                raise SnapTradeStoreNotCreatedError(
                    f"the {self.description} does not exist yet; the first client to start creates it"
                )
            if not self.path.exists():
                # Private before SQLite creates it with the umask's mode.
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        try:
            with self._lock:
                self._connection()
        except sqlite3.Error as exc:
            raise SnapTradeConfigurationError(f"cannot open the {self.description}: {exc}{_check(setting)}") from None

    def ddl(self, statement: str) -> str:
        out = statement.replace("{id}", "INTEGER PRIMARY KEY AUTOINCREMENT").replace("{real}", "REAL")
        return re.sub(r"\{t:(\w+)\}", lambda m: self.table(m.group(1)), out)

    def table(self, name: str) -> str:
        return name

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise self._error(f"the {self.description} is closed")
        if self._conn is None or self._pid != os.getpid():
            # After fork the inherited connection is the parent's: abandon it, never close it.
            target, uri = (":memory:" if self.memory else str(self.path)), False
            if self._read_only:
                # A read-only connection to a WAL database creates (and leaves) -wal/-shm files
                # unless they exist already (a live service): without them, read it as immutable.
                live = self.path.with_name(self.path.name + "-wal").exists()
                target, uri = self.path.resolve().as_uri() + ("?mode=ro" if live else "?mode=ro&immutable=1"), True
            conn = sqlite3.connect(target, timeout=0.002, isolation_level=None, check_same_thread=False, uri=uri)
            # SQLite's own handler only covers the first milliseconds; retry_busy does the rest.
            conn.execute("PRAGMA busy_timeout = 2")
            if self._read_only:
                self._conn, self._pid = conn, os.getpid()
                return conn  # the file's journal mode and pragmas are the writers' business
            if not self.memory:
                (mode,) = self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
                if str(mode).lower() != "wal":
                    raise SnapTradeConfigurationError(
                        f"the {self.description} cannot use WAL mode; put it on a local filesystem"
                    )
            # Zero freed pages, so erased rows leave no bytes behind in the file.
            conn.execute("PRAGMA secure_delete = ON")
            self._conn, self._pid, self._synchronous = conn, os.getpid(), ""
        return self._conn

    def _retry(self, attempt: Callable[[], _T]) -> _T:
        return retry_busy(attempt, self._busy_timeout)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(f"the {self.description} failed: {exc}", retryable=is_busy(exc)) from None

    def setup(self, schema: StoreSchema, *, create: bool = True, then: Callable[[Cursor], None] | None = None) -> int:
        if not create:
            with self._lock, self._errors():
                session = SQLiteSession(self._connection(), self.ddl)
                return self._retry(lambda: ensure_schema(session, schema, where=self.description, create=False))
        with self.transaction(durable=True) as cur:
            found = ensure_schema(SQLiteSession(cur, self.ddl), schema, where=self.description)
            if then is not None:
                then(cur)
            return found

    def connection(self) -> sqlite3.Connection:
        with self._lock:
            return self._connection()

    @contextmanager
    def transaction(self, *, durable: bool, lock: str | None = None) -> Iterator[Cursor]:
        with self._lock, self._errors():
            conn = self._connection()
            wanted = "FULL" if durable else "NORMAL"
            if wanted != self._synchronous:  # a PRAGMA per append would cost as much as the insert
                conn.execute(f"PRAGMA synchronous = {wanted}")
                self._synchronous = wanted
            # BEGIN IMMEDIATE takes the file's write lock up front: writers queue here, one at a
            # time, and never deadlock upgrading a read lock. Only BEGIN is retried.
            self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield _SQLiteCursor(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._errors():
            conn = self._connection()
            return self._retry(lambda: conn.execute(sql, tuple(params)).fetchall())

    def snapshot(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        with self._lock, self._errors():
            conn = self._connection()

            def read() -> list[list[tuple[Any, ...]]]:
                # A deferred transaction in WAL mode reads one snapshot from its first SELECT on.
                conn.execute("BEGIN")
                try:
                    return [conn.execute(sql, tuple(params)).fetchall() for sql, params in statements]
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")

            return self._retry(read)

    def checkpoint(self) -> None:
        """Copy the WAL back into the file and truncate it, so erased rows leave no old page copies."""
        self.query("PRAGMA wal_checkpoint(TRUNCATE)")

    def __repr__(self) -> str:
        return f"SQLiteDatabase({str(self.path)!r})"


class _PostgresCursor:
    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), tuple(params))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check(setting: str | None) -> str:
    return f"; check {setting}" if setting else ""


def open_schema(
    db: Database, schema: StoreSchema, *, create: bool = True, then: Callable[[Cursor], None] | None = None
) -> int:
    """``db.setup(...)``, returning the version found; a failure closes ``db`` and refuses the store.

    A schema this release cannot use passes through as it is
    (:class:`~aims_snaptrade.errors.SnapTradeSchemaVersionError`); any other failure becomes a
    :class:`~aims_snaptrade.errors.SnapTradeConfigurationError`, because a store that cannot
    create its tables at start will not work later either.
    """
    try:
        return db.setup(schema, create=create, then=then)
    except SnapTradeConfigurationError:
        db.close()
        raise
    except SnapTradeStoreError as exc:
        db.close()
        raise SnapTradeConfigurationError(
            f"cannot open the {db.description}: {exc.message}{_check(db.setting)}"
        ) from None


class PostgresDatabase(_OneConnectionPerProcess):
    """A PostgreSQL database (psycopg 3, the ``postgres`` extra); tables live in ``schema``."""

    kind = "postgresql"
    persistent = True
    row_lock = " FOR UPDATE"

    def __init__(
        self,
        conninfo: str,
        *,
        what: str,
        schema: str = "public",
        connect_timeout: float = 5.0,
        error: type[SnapTradeStoreError] = SnapTradeStoreError,
        setting: str | None = None,
        refusal: str = "cannot use",
        on_connect: Sequence[str] = (),
    ) -> None:
        """Check the connection string and schema name and connect.

        ``what``, ``error`` and ``setting`` as for :class:`SQLiteDatabase`; ``refusal`` starts the
        message of a server that cannot be reached (the words each store has always used);
        ``on_connect`` statements run on every new connection (session settings).
        """
        try:
            import psycopg
        except ImportError:
            raise SnapTradeConfigurationError(
                f"the PostgreSQL {what} needs psycopg 3: pip install 'aims-snaptrade[postgres]'"
            ) from None
        if not _IDENTIFIER.match(schema):
            raise SnapTradeConfigurationError(f"PostgreSQL schema {schema!r} must be a plain identifier")
        self._psycopg = psycopg
        try:
            parts = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error:
            raise SnapTradeConfigurationError(
                f"the PostgreSQL {what} URL{f' ({setting})' if setting else ''} is not a valid connection string"
            ) from None
        password = parts.get("password")
        # A key, not a user secret: long-lived, so never evicted by the many user secrets registered.
        register_secret(None if password is None else str(password), kind="key")
        user = str(parts.get("user", ""))
        host, port, db = parts.get("host", "localhost"), parts.get("port", "5432"), parts.get("dbname", "")
        self.target = f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"
        """Where the database is, never with its password."""
        self.description = f"PostgreSQL {what} at {self.target}"
        self.schema = schema
        self.setting = setting
        self._on_connect = tuple(on_connect)
        self._error = error
        self._conninfo = conninfo
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in parts:
            self._kwargs["connect_timeout"] = max(1, round(connect_timeout))
        if "application_name" not in parts:
            self._kwargs["application_name"] = f"aims-snaptrade-{what.replace(' ', '-')}"
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._closed = False
        try:
            with self._lock:
                self._connection()
        except psycopg.Error as exc:
            raise SnapTradeConfigurationError(
                redact(f"{refusal} the {self.description}: {_one_line(exc)}{_check(setting)}")
            ) from None

    def ddl(self, statement: str) -> str:
        out = statement.replace("{id}", "BIGSERIAL PRIMARY KEY").replace("{real}", "DOUBLE PRECISION")
        return re.sub(r"\{t:(\w+)\}", lambda m: self.table(m.group(1)), out)

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    def _connection(self) -> Any:
        if self._closed:
            raise self._error(f"the {self.description} is closed")
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed and not conn.broken:
            return conn
        self._conn = None  # after fork the socket is the parent's: abandon it, never close it
        conn = self._psycopg.connect(self._conninfo, **self._kwargs)
        for statement in self._on_connect:
            conn.execute(statement)
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            conn = self._conn
            if conn is not None and (conn.closed or conn.broken):
                self._conn = None
            retryable = isinstance(exc, self._psycopg.OperationalError)
            message = redact(f"the {self.description} failed: {_one_line(exc)}")
            raise self._error(message, retryable=retryable) from None

    def setup(self, schema: StoreSchema, *, create: bool = True, then: Callable[[Cursor], None] | None = None) -> int:
        schema = schema.qualified(f'"{self.schema}".')
        with self._lock, self._errors():
            conn = self._connection()
            if not create:
                return ensure_schema(PsycopgSession(conn, self.ddl), schema, where=self.description, create=False)
            try:
                with conn.transaction():
                    # Several services start at once: serialise the DDL instead of racing on pg_type.
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("aims_snaptrade:" + self.schema,))
                    # Check before creating: CREATE SCHEMA IF NOT EXISTS still demands the CREATE
                    # privilege, which a least-privilege role using existing tables does not have.
                    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone() is None:
                        conn.execute(f'CREATE SCHEMA "{self.schema}"')
                    found = ensure_schema(PsycopgSession(conn, self.ddl), schema, where=self.description)
                    if then is not None:
                        then(_PostgresCursor(conn))
                    return found
            except self._psycopg.errors.InsufficientPrivilege as exc:
                raise permission_refusal(schema, self.description, _one_line(exc)) from None

    def connection(self) -> Any:
        with self._lock:
            return self._connection()

    def run(self, work: Callable[[Cursor], _T], *, retry_dropped: bool, transaction: bool = False) -> _T:
        """Run ``work`` in autocommit (each statement its own transaction), or in one durable ``transaction``.

        With ``retry_dropped`` a connection the server dropped is reopened and ``work`` run once
        more: only for work whose answer stays right when it runs twice (reads, upserts,
        compare-and-swap rewrites), since the first run may have committed before its reply was lost.
        """
        for attempt in (1, 2):
            try:
                if transaction:
                    with self.transaction(durable=True) as cur:
                        return work(cur)
                with self._lock, self._errors():
                    return work(_PostgresCursor(self._connection()))
            except SnapTradeStoreError as exc:
                if not (retry_dropped and attempt == 1 and exc.retryable and self._conn is None):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def transaction(self, *, durable: bool, lock: str | None = None) -> Iterator[Cursor]:
        with self._lock, self._errors():
            conn = self._connection()
            # One round trip opens the transaction and sets its durability: durable writes wait for
            # the WAL flush; the others may be lost only with the server, never half-written.
            conn.execute(f"BEGIN; SET LOCAL synchronous_commit = {'on' if durable else 'off'}")
            try:
                if lock is not None:
                    conn.execute(f"SELECT 1 FROM {self.table(lock)} WHERE id = 1 FOR UPDATE")
                yield _PostgresCursor(conn)
            except BaseException:
                if not conn.closed and not conn.broken:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._errors():
            rows: list[tuple[Any, ...]] = self._connection().execute(sql.replace("?", "%s"), tuple(params)).fetchall()
            return rows

    def snapshot(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        with self._lock, self._errors():
            conn = self._connection()
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                return [conn.execute(sql.replace("?", "%s"), tuple(params)).fetchall() for sql, params in statements]
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute("ROLLBACK")

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL reclaims deleted rows with VACUUM."""

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.description!r}, schema={self.schema!r})"
