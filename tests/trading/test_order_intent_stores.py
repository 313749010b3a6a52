"""The shipped order-intent store conformance suite, run against every built-in store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from aims_snaptrade import errors as e
from aims_snaptrade.testing.order_intent_store_conformance import OrderIntentStoreConformance
from aims_snaptrade.trading import (
    MemoryOrderIntentStore,
    OrderIntentStore,
    PostgresOrderIntentStore,
    SQLiteOrderIntentStore,
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
