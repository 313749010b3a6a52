"""The shipped ledger conformance suite, run against every built-in ledger, and the URL factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from sync_helpers import POSTGRES_URL, prefix_for

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.sync import SQLiteSyncLedger, SyncLedger, open_sync_ledger
from aims_snaptrade.sync.ledger import PostgresSyncLedger
from aims_snaptrade.testing.forget_conformance import postgres_rows
from aims_snaptrade.testing.sync_ledger_conformance import SyncLedgerConformance


class TestMemoryLedger(SyncLedgerConformance):
    def make_ledger(self, tmp_path: Path) -> SyncLedger:
        return open_sync_ledger("memory://")


class TestSQLiteLedger(SyncLedgerConformance):
    def make_ledger(self, tmp_path: Path) -> SyncLedger:
        return open_sync_ledger(f"sqlite:///{tmp_path}/sync.db")


class TestPostgresLedger(SyncLedgerConformance):
    @pytest.fixture(autouse=True)
    def _schema(self, pg_schema: str) -> None:
        self.schema = pg_schema

    def make_ledger(self, tmp_path: Path) -> SyncLedger:
        return open_sync_ledger(f"{POSTGRES_URL}?schema={self.schema}&prefix={prefix_for(tmp_path)}")

    def stored_bytes(self, store: SyncLedger, tmp_path: Path) -> bytes:
        return postgres_rows(POSTGRES_URL, self.schema)


def test_factory_builds_each_builtin(tmp_path: Path, pg_schema: str) -> None:
    memory = open_sync_ledger("memory://")
    sqlite = open_sync_ledger(f"sqlite:///{tmp_path}/x.db")
    pg = open_sync_ledger(f"postgres://postgres@127.0.0.1:5432/test?schema={pg_schema}&prefix=factory_")
    try:
        assert isinstance(memory, SQLiteSyncLedger) and memory.persistent is False
        assert isinstance(sqlite, SQLiteSyncLedger) and sqlite.persistent is True
        assert isinstance(pg, PostgresSyncLedger) and pg.kind == "postgresql"
    finally:
        for ledger in (memory, sqlite, pg):
            ledger.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("no-scheme", "has no scheme"),
        ("bogus://x", "unknown sync ledger scheme 'bogus'.*aims_snaptrade.sync_ledgers"),
        ("memory://path", "takes no path"),
        ("sqlite://", "must be sqlite:///"),
        ("sqlite:///:memory:", "must be sqlite:///"),
        ("sqlite:////no/such/directory/x.db", "does not exist"),
        ("postgresql://postgres@127.0.0.1:5432/test?schema=bad-name", "plain identifier"),
        ("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1", "cannot use the PostgreSQL sync ledger"),
    ],
)
def test_factory_rejects_bad_urls_with_the_fix(url: str, says: str) -> None:
    with pytest.raises(SnapTradeConfigurationError, match=says) as caught:
        open_sync_ledger(url)
    text = str(caught.value)
    assert "SNAPTRADE_SYNC_LEDGER_URL" in text or "identifier" in text or "entry-points" in text


def test_a_custom_scheme_comes_from_its_entry_point(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A package registering ``aims_snaptrade.sync_ledgers`` entry point ``custom`` opens ``custom://`` URLs."""
    from importlib.metadata import EntryPoint

    from aims_snaptrade import store_registry

    opened: list[str] = []

    def factory(url: str) -> SyncLedger:
        opened.append(url)
        return SQLiteSyncLedger(tmp_path / "custom.db")

    monkeypatch.setitem(globals(), "_custom_factory", factory)
    point = EntryPoint("custom", f"{__name__}:_custom_factory", "aims_snaptrade.sync_ledgers")
    monkeypatch.setattr(
        store_registry, "entry_points", lambda group: [point] if group == "aims_snaptrade.sync_ledgers" else []
    )
    ledger = open_sync_ledger("custom://anything")
    try:
        assert isinstance(ledger, SQLiteSyncLedger)
        assert opened == ["custom://anything"]
    finally:
        ledger.close()
