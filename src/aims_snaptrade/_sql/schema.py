"""Schema versions of the SQL stores: one helper every store opens its tables through.

Each SQL store (secrets, consent, audit, order intents, webhook claims, sync ledger) describes its
tables as a :class:`StoreSchema`: the statements that create the current version from nothing,
and for every older version the statements that move it one version up. :func:`ensure_schema`
runs inside the store's own set-up transaction (under the lock that already serialises its DDL,
``BEGIN IMMEDIATE`` in SQLite, an advisory lock in PostgreSQL), so two processes starting at once
migrate once, and a failed migration leaves the old schema as it was.

The version lives in one table per database (SQLite file, PostgreSQL schema),
``aims_snaptrade_schema_versions``, one row per store: ``version`` (what the tables are) and
``compatible_from`` (the oldest version a library must know to use them: an additive change keeps
it low so replicas of the previous release keep running during a rolling upgrade). Tables written
before versions were recorded (release 0.1.0) have no row and are version 1.

A library meeting a schema it does not know (``compatible_from`` above its own version) refuses
with :class:`~aims_snaptrade.errors.SnapTradeSchemaVersionError` instead of writing rows a newer
release would misread; so does a read-only open (``create=False``) of an older schema, and a role
that may not change the tables. The error names the command: ``aims-snaptrade migrate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from aims_snaptrade._version import __version__
from aims_snaptrade.errors import SnapTradeSchemaVersionError

__all__ = [
    "MIGRATE_COMMAND",
    "VERSIONS_TABLE",
    "PsycopgSession",
    "SQLiteSession",
    "Session",
    "StoreSchema",
    "ensure_schema",
    "permission_refusal",
    "read_schema_version",
]

log = logging.getLogger("aims_snaptrade.schema")

VERSIONS_TABLE = "aims_snaptrade_schema_versions"
MIGRATE_COMMAND = "aims-snaptrade migrate"
Dialect = Literal["sqlite", "postgresql"]

_CREATE_VERSIONS = """CREATE TABLE IF NOT EXISTS {versions} (
    store TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    compatible_from INTEGER NOT NULL,
    written_by TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)"""
_UPSERT = """INSERT INTO {versions} (store, version, compatible_from, written_by, updated_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (store) DO UPDATE SET version = excluded.version, compatible_from = excluded.compatible_from,
        written_by = excluded.written_by, updated_at = excluded.updated_at"""


class Session(Protocol):
    """One connection inside the caller's transaction, with ``?`` placeholders."""

    dialect: Dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows."""
        ...


class SQLiteSession:
    """A :class:`Session` over a ``sqlite3.Connection`` (placeholders are already ``?``)."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: Any, render: Callable[[str], str] = str) -> None:
        self._conn, self._render = conn, render

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(self._render(sql), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(self._render(sql), tuple(params)).fetchall())


class PsycopgSession:
    """A :class:`Session` over a psycopg 3 connection (``?`` becomes ``%s``)."""

    dialect: Dialect = "postgresql"

    def __init__(self, conn: Any, render: Callable[[str], str] = str) -> None:
        self._conn, self._render = conn, render

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(self._render(sql).replace("?", "%s"), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(self._render(sql).replace("?", "%s"), tuple(params)).fetchall())


@dataclass(frozen=True)
class StoreSchema:
    """What one store's tables are at each version.

    Attributes:
        store: The store's name in messages and in the versions table (``"secrets"``).
        table: Its main table, unqualified: it exists in every version, so a database with the
            table and no version row was written before versions were recorded (version 1).
        version: The version this library writes.
        create: Statements that create ``version`` from nothing (``IF NOT EXISTS``).
        migrations: ``{n: statements}`` moving version ``n`` to ``n + 1``, for every ``n`` below
            ``version``; they run in one transaction with the version's update.
        compatible_from: The oldest version a library must know to use these tables.
        prefix: Qualifies table names (``'"schema".'`` in PostgreSQL, ``""`` in SQLite).
    """

    store: str
    table: str
    version: int
    create: tuple[str, ...]
    migrations: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    compatible_from: int = 1
    prefix: str = ""

    def __post_init__(self) -> None:
        missing = [n for n in range(1, self.version) if n not in self.migrations]
        if missing or not 1 <= self.compatible_from <= self.version:
            raise ValueError(f"schema of {self.store}: no migration from versions {missing} or a bad compatible_from")

    @property
    def key(self) -> str:
        """This store's row in the versions table (several stores and tables share one database)."""
        return f"{self.store}:{self.table}"

    def qualified(self, prefix: str) -> StoreSchema:
        """The same schema with its tables in ``prefix`` (a PostgreSQL schema)."""
        return replace(self, prefix=prefix)


def _exists(session: Session, prefix: str, table: str) -> bool:
    if session.dialect == "sqlite":
        return bool(
            session.query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))[0][0]
        )
    return session.query("SELECT to_regclass(?)", (prefix + f'"{table}"',))[0][0] is not None


def _versions(session: Session, schema: StoreSchema) -> str:
    return schema.prefix + (VERSIONS_TABLE if session.dialect == "sqlite" else f'"{VERSIONS_TABLE}"')


def _recorded(session: Session, schema: StoreSchema) -> tuple[int, int] | None:
    if not _exists(session, schema.prefix, VERSIONS_TABLE):
        return None
    rows = session.query(
        f"SELECT version, compatible_from FROM {_versions(session, schema)} WHERE store = ?",
        (schema.key,),
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def read_schema_version(session: Session, schema: StoreSchema) -> tuple[int, int] | None:
    """``(version, compatible_from)`` of ``schema``'s tables, ``None`` when they do not exist yet.

    Tables without a recorded version were written by release 0.1.0: version 1. Changes nothing
    (safe on a read-only connection).
    """
    recorded = _recorded(session, schema)
    if recorded is not None:
        return recorded
    return (1, 1) if _exists(session, schema.prefix, schema.table) else None


def _refuse(schema: StoreSchema, where: str, found: int, why: str, fix: str) -> SnapTradeSchemaVersionError:
    return SnapTradeSchemaVersionError(
        f"the {schema.store} tables in {where} are at schema version {found}, {why}",
        store=schema.store,
        found=found,
        supported=schema.version,
        hint=fix,
    )


def ensure_schema(session: Session, schema: StoreSchema, *, where: str, create: bool = True) -> int:
    """Create ``schema``'s tables, or migrate them in place to ``schema.version``; returns the version found.

    Runs inside the caller's transaction. ``where`` describes the database for messages (never a
    password). With ``create=False`` nothing is written: an older schema is refused (the store
    opened read-only cannot migrate it) as well as a newer one.

    Raises :class:`SnapTradeSchemaVersionError` for a schema written by a newer, incompatible
    release, or an older one that cannot be migrated here.
    """
    recorded = _recorded(session, schema)
    found = recorded or read_schema_version(session, schema)
    if found is not None and found[1] > schema.version:
        raise _refuse(
            schema,
            where,
            found[0],
            f"written by a newer aims-snaptrade that this one ({__version__}, schema version {schema.version}) "
            "cannot use safely",
            "Upgrade aims-snaptrade on this service to the release that wrote it (see CHANGELOG.md), "
            "or point the store URL at another database; nothing was changed.",
        )
    if found is not None and found[0] >= schema.version and (recorded is not None or not create):
        return found[0]
    if not create:
        if found is None:
            return 0
        raise _refuse(
            schema,
            where,
            found[0],
            f"older than this aims-snaptrade's version {schema.version}, and a read-only open cannot migrate it",
            f"Run `{MIGRATE_COMMAND}` (or start a client once) with the same settings to migrate it in place.",
        )
    versions = _versions(session, schema)
    if session.dialect == "postgresql":
        # Stores of one schema share the versions table: serialise its creation across them.
        session.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ("aims_snaptrade:versions:" + versions,))
    if not _exists(session, schema.prefix, VERSIONS_TABLE):
        session.execute(_CREATE_VERSIONS.format(versions=versions))
    if found is None:
        for statement in schema.create:
            session.execute(statement)
    else:  # found[0] may equal schema.version: tables of 0.1.0, recorded now with no change
        for step in range(found[0], schema.version):
            for statement in schema.migrations[step]:
                session.execute(statement)
    session.execute(
        _UPSERT.format(versions=versions),
        (schema.key, schema.version, schema.compatible_from, __version__, time.time()),
    )
    if found is None:
        log.info("created the %s tables in %s at schema version %d", schema.store, where, schema.version)
    elif found[0] < schema.version:
        log.warning(
            "migrated the %s tables in %s from schema version %d to %d", schema.store, where, found[0], schema.version
        )
    else:
        log.info("recorded schema version %d of the %s tables in %s", found[0], schema.store, where)
    return 0 if found is None else found[0]


def permission_refusal(schema: StoreSchema, where: str, reason: str) -> SnapTradeSchemaVersionError:
    """The typed error for a role that may not create or migrate the tables it needs."""
    return SnapTradeSchemaVersionError(
        f"the {schema.store} tables in {where} need creating or migrating to schema version {schema.version}, "
        f"and this role may not ({reason})",
        store=schema.store,
        found=0,
        supported=schema.version,
        hint=f"Run `{MIGRATE_COMMAND}` once with a role that may create and alter tables, then start the service.",
    )
