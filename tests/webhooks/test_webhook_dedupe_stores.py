"""Every built-in webhook dedupe store passes the shipped conformance suite, on real servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from webhook_helpers import POSTGRES_URL, REDIS_URL, table_for

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeWebhookDedupeStoreError
from aims_snaptrade.testing.webhook_dedupe_conformance import WebhookDedupeStoreConformance
from aims_snaptrade.webhooks import (
    MemoryWebhookDedupeStore,
    SQLiteWebhookDedupeStore,
    WebhookDedupeStore,
    open_webhook_dedupe_store,
)
from aims_snaptrade.webhooks.dedupe import PostgresWebhookDedupeStore, RedisWebhookDedupeStore


class TestMemoryStore(WebhookDedupeStoreConformance):
    shares_between_handles = False

    def make_store(self, tmp_path: Path) -> WebhookDedupeStore:
        return MemoryWebhookDedupeStore()


class TestSQLiteStore(WebhookDedupeStoreConformance):
    def make_store(self, tmp_path: Path) -> WebhookDedupeStore:
        return open_webhook_dedupe_store(f"sqlite:///{tmp_path}/claims.db")


class TestRedisStore(WebhookDedupeStoreConformance):
    @pytest.fixture(autouse=True)
    def _prefix(self, redis_prefix: str) -> None:
        self.prefix = redis_prefix

    def make_store(self, tmp_path: Path) -> WebhookDedupeStore:
        return open_webhook_dedupe_store(f"{REDIS_URL}?prefix={self.prefix}{tmp_path.name}:")


class TestPostgresStore(WebhookDedupeStoreConformance):
    concurrency_threads = 8

    @pytest.fixture(autouse=True)
    def _schema(self, pg_schema: str) -> None:
        self.schema = pg_schema

    def make_store(self, tmp_path: Path) -> WebhookDedupeStore:
        return open_webhook_dedupe_store(f"{POSTGRES_URL}?schema={self.schema}&table={table_for(tmp_path)}")


def test_urls_choose_the_store(tmp_path: Path, redis_prefix: str, pg_schema: str) -> None:
    stores = [
        open_webhook_dedupe_store("memory://"),
        open_webhook_dedupe_store(f"sqlite:///{tmp_path}/c.db"),
        open_webhook_dedupe_store(f"{REDIS_URL}?prefix={redis_prefix}"),
        open_webhook_dedupe_store(
            POSTGRES_URL.replace("postgresql://", "postgres://") + f"?schema={pg_schema}&table=url_t"
        ),
    ]
    try:
        kinds = [type(s) for s in stores]
        assert kinds == [
            MemoryWebhookDedupeStore,
            SQLiteWebhookDedupeStore,
            RedisWebhookDedupeStore,
            PostgresWebhookDedupeStore,
        ]
        assert [s.shared for s in stores] == [False, False, True, True]
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("no-scheme", "has no scheme"),
        ("memory://somewhere", "takes no path"),
        ("sqlite://", "must be sqlite:///"),
        ("sqlite:///:memory:", "must be sqlite:///"),
        ("nosuch://x", "unknown webhook dedupe store scheme 'nosuch'.*known schemes: memory://"),
        (POSTGRES_URL + "?table=bad-name", "invalid PostgreSQL table name"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, fragment: str) -> None:
    with pytest.raises(SnapTradeConfigurationError, match=fragment):
        open_webhook_dedupe_store(url)


def test_sqlite_in_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(SnapTradeConfigurationError, match="does not exist"):
        SQLiteWebhookDedupeStore(tmp_path / "missing" / "c.db")


def test_unreachable_postgres_is_a_configuration_error() -> None:
    with pytest.raises(SnapTradeConfigurationError, match="cannot open the PostgreSQL webhook dedupe store"):
        PostgresWebhookDedupeStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1)


def test_unreachable_redis_is_a_store_error() -> None:
    store = RedisWebhookDedupeStore("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(SnapTradeWebhookDedupeStoreError, match="Redis webhook dedupe store failed"):
            store.claim("x", "t", 1.0)
    finally:
        store.close()


def test_a_custom_scheme_opens_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in package (module + dist-info on sys.path, as pip leaves it) registers ``claims://``."""
    (tmp_path / "claims_plugin.py").write_text(
        "from aims_snaptrade.webhooks import SQLiteWebhookDedupeStore\n"
        "def open_claims(url):\n"
        "    store = SQLiteWebhookDedupeStore(url.partition(':///')[2])\n"
        "    store.kind = 'claims'\n"
        "    return store\n"
    )
    info = tmp_path / "claims_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: claims-plugin\nVersion: 0.1\n")
    entry = "[aims_snaptrade.webhook_dedupe_stores]\nclaims = claims_plugin:open_claims\n"
    (info / "entry_points.txt").write_text(entry)
    monkeypatch.syspath_prepend(str(tmp_path))
    store = open_webhook_dedupe_store(f"claims:///{tmp_path}/c.db")
    try:
        assert store.kind == "claims"
        assert store.claim("w", "t", 60.0) == "claimed"
    finally:
        store.close()
        monkeypatch.delitem(sys.modules, "claims_plugin", raising=False)
