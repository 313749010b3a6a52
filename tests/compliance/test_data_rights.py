"""Acceptance: export then erase; the receipt matches, the database files hold nothing of the user."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing

import pytest
from compliance_helpers import AUDIT_SECRET

from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient, SnapTradeGuardrailError
from aims_snaptrade.secrets import Keyring, SQLiteSecretStore


@pytest.fixture
def setup(tmp_path, emu):
    """A client whose secrets, consents, audit chain and sync ledger share one SQLite file, and a user."""
    db = tmp_path / "aims.db"
    secrets = SQLiteSecretStore(db, Keyring.generate("v1"))
    user = emu.connect("erin-7f3a9c", brokerage="ALPACA")
    secrets.put(user.user_id, user.user_secret)
    settings = {
        "client_id": emu.client_id,
        "consumer_key": emu.consumer_key,
        "environment": "sandbox",
        "base_url": emu.base_url,
        "secret_store": secrets,
        "retry": "none",
        "consent_store_url": f"sqlite:///{db}",
        "audit_key": AUDIT_SECRET,
        "audit_store_url": f"sqlite:///{db}",
        "sync_ledger_url": f"sqlite:///{db}",
    }
    yield db, user, settings
    secrets.close()


def _raw_bytes(db):
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_export_then_erase_leaves_only_pseudonyms(setup, emu):
    db, user, settings = setup
    with SafeSnapTradeClient(**settings) as client:
        client.grant_consent(user.user_id, "read", disclosure_version="v1", source="test")
        client.grant_consent(user.user_id, "read", disclosure_version="v2", source="test")
        client.get_positions(user.user_id, user.account_ids[0])
        client.sync_portfolio(user.user_id)
        document = client.export_user(user.user_id)
        json.dumps(document)  # one JSON document
        with pytest.raises(SnapTradeGuardrailError, match="confirm=True"):
            client.erase_user(user.user_id)
        assert emu.journal.count(operation="delete_snap_trade_user") == 0
        clear_before = sum(r.user_id is not None for r in client.audit_trail.records_for_user(user.user_id))
        receipt = client.erase_user(user.user_id, confirm=True)
        report = client.audit_trail.verify()
        kept = client.audit_trail.records_for_user(user.user_id)

    # The export: local and SnapTrade data, never the secret.
    assert document["local"]["secret"] == {"stored": True, "rotation_pending": False}
    synced = document["local"]["sync"]
    assert synced["user_id"] == user.user_id
    assert {a["account_id"] for a in synced["accounts"]} == set(user.account_ids)
    assert [c["disclosure_version"] for c in document["local"]["consents"]] == ["v1", "v2"]
    assert {r["action"] for r in document["local"]["audit_records"]} >= {"consent.grant", "get_all_account_positions"}
    remote = document["snaptrade"]
    assert remote["user"]["registered"] is True
    assert remote["connections"] and remote["accounts"]["results"]
    data = remote["account_data"][user.account_ids[0]]
    assert {"balances", "positions", "activities"} <= set(data)
    assert user.user_secret not in json.dumps(document)

    # The receipt matches what was removed.
    assert receipt.snaptrade["deleted"] is True
    assert receipt.snaptrade["request_id"] == emu.journal.last(operation="delete_snap_trade_user").request_id
    assert receipt.local == {
        "secret_removed": True,
        "consents_removed": 2,
        "sync_rows_removed": 1 + len(synced["accounts"]),
        "rate_limits_removed": 0,
        "webhook_claims_removed": 0,
        "audit_records_pseudonymised": clear_before + 1,
    }
    # (+1: the deleteUser call itself was audited with the clear id, then pseudonymised.)

    # The files: no secret, consent or clear id of the user; the chain still verifies.
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM user_secrets WHERE user_id = ?", (user.user_id,)).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM aims_snaptrade_consents WHERE user_id = ?", (user.user_id,)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM aims_snaptrade_audit WHERE user_id = ? OR account_id = ?",
            (user.user_id, user.account_ids[0]),
        ).fetchone() == (0,)
        refs = {
            r[0] for r in conn.execute("SELECT DISTINCT user_ref FROM aims_snaptrade_audit WHERE user_ref IS NOT NULL")
        }
    assert receipt.user_ref in refs
    raw = _raw_bytes(db)
    assert user.user_id.encode() not in raw
    assert user.user_secret.encode() not in raw
    assert report.ok, report
    assert kept and all(r.user_id is None for r in kept)
    assert kept[-1].action == "data_rights.erase"


def test_async_export_and_erase_on_the_same_road(setup, emu):
    db, user, settings = setup

    async def main():
        async with AsyncSafeSnapTradeClient(**settings) as client:
            exported = await client.export_user(user.user_id)
            receipt = await client.erase_user(user.user_id, confirm=True)
            return exported, receipt, client.audit_trail.verify()

    exported, receipt, report = asyncio.run(main())
    assert exported["snaptrade"]["user"]["registered"] is True
    assert receipt.snaptrade["deleted"] and receipt.local["secret_removed"]
    assert report.ok
    assert user.user_id.encode() not in _raw_bytes(db)


def test_erasing_a_user_unknown_to_snaptrade_still_erases_locally(setup, emu):
    _, _, settings = setup
    with SafeSnapTradeClient(**settings) as client:
        client.grant_consent("ghost-user", "read", disclosure_version="v1", source="test")
        receipt = client.erase_user("ghost-user", confirm=True)
    assert receipt.snaptrade["deleted"] is False
    assert receipt.local["consents_removed"] == 1
