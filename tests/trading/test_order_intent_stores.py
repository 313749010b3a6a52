"""The shipped order-intent store conformance suite, run against every built-in store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from aims_snaptrade import errors as e
from aims_snaptrade.testing.order_intent_store_conformance import OrderIntentStoreConformance
from aims_snaptrade.trading import (
    MemoryOrderIntentStore,
    OrderIntentStore,
    PostgresOrderIntentStore,
    SQLiteOrderIntentStore,
    SQLOrderIntentStore,
)
from aims_snaptrade.trading.factory import open_order_intent_store

POSTGRES_URL = os.environ.get("AIMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _table(tmp_path: Path) -> str:
    # Unique per test (tmp_path is), stable across reopening, never shared with other sessions.
    return "intents_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:20]


class TestMemoryIntents(OrderIntentStoreConformance):
    def make_store(self, tmp_path: Path) -> OrderIntentStore:
        return MemoryOrderIntentStore()


class TestSQLiteIntents(OrderIntentStoreConformance):
    def make_store(self, tmp_path: Path) -> OrderIntentStore:
        return SQLiteOrderIntentStore(tmp_path / "intents.db")


class TestPostgresIntents(OrderIntentStoreConformance):
    made: list[PostgresOrderIntentStore]

    def make_store(self, tmp_path: Path) -> OrderIntentStore:
        return open_order_intent_store(f"{POSTGRES_URL}?table={_table(tmp_path)}")

    def stored_bytes(self, store: OrderIntentStore, tmp_path: Path) -> bytes:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            rows = conn.execute(f'SELECT t::text FROM public."{_table(tmp_path)}" t').fetchall()
        return "\n".join(str(row[0]) for row in rows).encode()

    @pytest.fixture(autouse=True)
    def _drop_table(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        yield
        store = PostgresOrderIntentStore(POSTGRES_URL, table=_table(tmp_path))
        store.drop()
        store.close()


@pytest.mark.parametrize(
    "url",
    ["nosuch://x", "no-scheme", "sqlite:///", "sqlite:///:memory:", "memory://path", "sqlite:///missing-dir/x.db"],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(e.SnapTradeConfigurationError):
        open_order_intent_store(url)


def test_urls_open_the_built_in_stores(tmp_path: Path) -> None:
    assert isinstance(open_order_intent_store("memory://"), MemoryOrderIntentStore)
    store = open_order_intent_store(f"sqlite:///{tmp_path}/i.db")
    assert isinstance(store, SQLiteOrderIntentStore) and store.path == tmp_path / "i.db"
    store.close()


# --- what the built-in stores promise beyond the conformance suite ---------------------------------------


def _stores(tmp_path: Path) -> list[OrderIntentStore]:
    return [
        MemoryOrderIntentStore(),
        SQLiteOrderIntentStore(tmp_path / "intents.db"),
        PostgresOrderIntentStore(POSTGRES_URL, table=_table(tmp_path)),
    ]


def test_exports_are_json_and_a_failed_update_names_the_intent(tmp_path: Path) -> None:
    import json

    from aims_snaptrade.testing.order_intent_store_conformance import make_intent

    for store in _stores(tmp_path):
        try:
            intent = make_intent(user_id="export-me")
            store.record(intent)
            exported = store.export_user("export-me")  # type: ignore[attr-defined]
            assert exported == [intent.model_dump(mode="json")], store
            assert json.loads(json.dumps(exported)) == exported  # JSON values only (no Decimal, no datetime)
            missing = make_intent()
            with pytest.raises(e.SnapTradeOrderIntentStoreError, match=missing.client_order_id):
                store.update(missing)
        finally:
            if isinstance(store, PostgresOrderIntentStore):
                store.drop()
            store.close()


def test_every_write_of_a_sql_journal_is_durable(tmp_path: Path) -> None:
    # "record and update are durable when they return": each write is one durable transaction
    # (SQLite synchronous=FULL, PostgreSQL synchronous_commit=on), and so is an erasure.
    from aims_snaptrade.testing.order_intent_store_conformance import make_intent

    for store in _stores(tmp_path)[1:]:
        assert isinstance(store, SQLOrderIntentStore)
        asked: list[bool] = []
        transaction = store._db.transaction

        def spy(*, durable: bool, lock: str | None = None, _t: Any = transaction, _asked: Any = asked) -> Any:
            _asked.append(durable)
            return _t(durable=durable, lock=lock)

        store._db.transaction = spy  # type: ignore[method-assign]
        try:
            intent = make_intent(user_id="durable-user")
            store.record(intent)
            store.update(intent.model_copy(update={"status": "placed", "brokerage_order_id": "b-1"}))
            store.forget_user("durable-user")
            if isinstance(store, PostgresOrderIntentStore):
                store.drop()
            assert asked and all(d is True for d in asked), (store, asked)
            assert len(asked) == (4 if isinstance(store, PostgresOrderIntentStore) else 3)
        finally:
            store.close()


def test_sql_stores_name_themselves_and_the_setting_to_fix(tmp_path: Path) -> None:
    with pytest.raises(e.SnapTradeConfigurationError) as missing_dir:
        SQLiteOrderIntentStore(tmp_path / "no-such-dir" / "intents.db")
    assert "SQLite order-intent store" in missing_dir.value.message
    assert "SNAPTRADE_ORDER_INTENT_STORE_URL" in missing_dir.value.message
    store = SQLiteOrderIntentStore(tmp_path / "intents.db")
    assert repr(store).startswith("SQLiteOrderIntentStore(") and "intents.db" in repr(store)
    store.close()
    with pytest.raises(e.SnapTradeError) as unreachable:
        PostgresOrderIntentStore("postgresql://postgres@127.0.0.1:1/test", table=_table(tmp_path), connect_timeout=2)
    assert "PostgreSQL order-intent store" in unreachable.value.message
    assert "SNAPTRADE_ORDER_INTENT_STORE_URL" in unreachable.value.message
    with pytest.raises(e.SnapTradeConfigurationError, match="'bad-name;'"):
        PostgresOrderIntentStore(POSTGRES_URL, table="bad-name;")


def test_a_postgres_journal_lives_in_the_public_schema_unless_told(tmp_path: Path) -> None:
    import psycopg

    table = _table(tmp_path)
    store = PostgresOrderIntentStore(POSTGRES_URL, table=table)
    try:
        assert repr(store).startswith("PostgresOrderIntentStore(")
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            (found,) = conn.execute("SELECT to_regclass(%s)::text", (f'public."{table}"',)).fetchone()
        assert found is not None
    finally:
        store.drop()
        store.close()


def test_a_busy_sqlite_journal_waits_only_its_busy_timeout(tmp_path: Path) -> None:
    import sqlite3
    import time

    from aims_snaptrade.testing.order_intent_store_conformance import make_intent

    store = SQLiteOrderIntentStore(tmp_path / "intents.db", busy_timeout=0.2)
    holder = sqlite3.connect(tmp_path / "intents.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        with pytest.raises(e.SnapTradeOrderIntentStoreError):
            store.record(make_intent())
        assert time.monotonic() - started < 5  # not the default 10 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()


def test_a_journal_records_its_schema_version_under_the_key_earlier_releases_wrote(tmp_path: Path) -> None:
    # The versions table is on-disk format: a journal written by an earlier release is found by
    # this key, so renaming it would make an upgraded service re-create or refuse its journal.
    import sqlite3

    SQLiteOrderIntentStore(tmp_path / "intents.db").close()
    with sqlite3.connect(tmp_path / "intents.db") as conn:
        rows = conn.execute("SELECT store, version FROM aims_snaptrade_schema_versions").fetchall()
    assert rows == [("order_intents:aims_snaptrade_order_intents", 1)]


def test_a_postgres_journal_url_chooses_its_schema(tmp_path: Path) -> None:
    import uuid

    import psycopg

    schema, table = f"intents_{uuid.uuid4().hex[:12]}", _table(tmp_path)
    store = open_order_intent_store(f"{POSTGRES_URL}?schema={schema}&table={table}")
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            (found,) = conn.execute("SELECT to_regclass(%s)::text", (f'{schema}."{table}"',)).fetchone()
            (public,) = conn.execute("SELECT to_regclass(%s)::text", (f'public."{table}"',)).fetchone()
        assert found is not None and public is None
    finally:
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
