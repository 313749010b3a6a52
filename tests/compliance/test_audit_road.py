"""Acceptance: every call, refusal and secret/consent event is recorded on the road; no secret in the tables."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from compliance_helpers import AUDIT_SECRET
from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade import (
    AsyncSafeSnapTradeClient,
    SafeSnapTradeClient,
    SnapTradeAuditError,
    SnapTradeConsentRequiredError,
)
from aims_snaptrade.compliance import AuditEvent
from aims_snaptrade.testing import Fault


def test_calls_refusals_and_secret_events_are_recorded(kwargs, consents, trail, emu, alice):
    with SafeSnapTradeClient(**kwargs(consent=consents, audit=trail, retry="standard")) as client:
        with pytest.raises(SnapTradeConsentRequiredError):
            client.list_accounts(alice.user_id)
        client.grant_consent(alice.user_id, "read", disclosure_version="v1", source="test")
        emu.faults.add(Fault.status(503), operation="get_all_account_positions", times=1)
        client.get_positions(alice.user_id, alice.account_ids[0])
        client.register_user("bob")
        client.revoke_consent(alice.user_id, source="support")
    records = trail.tail(100)
    refused, granted, positions, register, put, revoked = records
    assert (granted.kind, granted.action, granted.user_id) == ("consent", "consent.grant", alice.user_id)
    assert granted.to_json()["detail"]["disclosure_version"] == "v1"
    assert (revoked.action, revoked.to_json()["detail"]["revoked"]) == ("consent.revoke", 1)
    assert (refused.kind, refused.action, refused.attempts, refused.user_id) == (
        "refused",
        "list_all_user_accounts",
        0,
        alice.user_id,
    )
    assert refused.outcome == "SnapTradeConsentRequiredError"
    assert (positions.kind, positions.status, positions.attempts) == ("call", 200, 2)
    assert positions.account_id == alice.account_ids[0]
    assert positions.request_id == emu.journal.last(operation="get_all_account_positions").request_id
    assert (register.action, register.user_id, put.kind, put.action) == (
        "register_snap_trade_user",
        "bob",
        "secret",
        "secret.put",
    )
    assert trail.verify().ok


def test_async_client_records_on_the_same_road(kwargs, trail, emu, alice):
    async def main():
        async with AsyncSafeSnapTradeClient(**kwargs(audit=trail)) as client:
            await client.list_accounts(alice.user_id)

    asyncio.run(main())
    (record,) = trail.tail(10)
    assert (record.action, record.status, record.user_id) == ("list_all_user_accounts", 200, alice.user_id)


def test_on_record_hook_sees_each_record_and_cannot_break_calls(db_path, audit_key, caplog):
    from aims_snaptrade.compliance import SQLiteAuditTrail

    seen = []

    def hook(record):
        seen.append(record.seq)
        raise RuntimeError("the log pipeline is down")

    trail = SQLiteAuditTrail(db_path, audit_key, on_record=hook)
    trail.append(AuditEvent("consent", "consent.grant", user_id="u"))
    trail.append(AuditEvent("consent", "consent.revoke", user_id="u"))
    trail.close()
    assert seen == [1, 2]
    assert "on_record hook failed" in caplog.text


def test_a_failing_audit_store_says_the_call_happened(kwargs, trail, emu, alice):
    with SafeSnapTradeClient(**kwargs(audit=trail)) as client:
        trail.close()  # the store is gone
        with pytest.raises(SnapTradeAuditError, match="succeeded") as failed:
            client.list_accounts(alice.user_id)
    assert failed.value.request_id == emu.journal.last().request_id


def test_purge_keeps_the_remainder_verifiable(db_path, audit_key):
    from aims_snaptrade.compliance import SQLiteAuditTrail

    now = [datetime(2026, 1, 1, tzinfo=UTC).timestamp()]
    trail = SQLiteAuditTrail(db_path, audit_key, clock=lambda: now[0])
    for day in range(10):
        now[0] += 86400
        trail.append(AuditEvent("call", "check", detail={"day": day}))
    report = trail.purge(datetime.fromtimestamp(now[0], UTC) - timedelta(days=4, hours=12))
    assert (report.removed, report.anchor_seq) == (5, 5)
    verified = trail.verify()
    assert verified.ok, verified
    assert verified.anchor_seq == 5
    assert [r.seq for r in trail.tail(100)] == [6, 7, 8, 9, 10, 11]  # 11 is the purge's own record
    trail.close()


def _leaks(blob: str, secret: str) -> bool:
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), base64.b64encode(raw).decode(), raw.hex()}
    return any(form in blob for form in forms if form)


@settings(max_examples=5, deadline=None)
@given(secret=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=24, max_size=40))
def test_no_secret_reaches_the_audit_tables(tmp_path_factory, secret):
    from aims_snaptrade.secrets import MemorySecretStore
    from aims_snaptrade.testing import SnapTradeEmulator

    db = tmp_path_factory.mktemp("leak") / "audit.db"
    with SnapTradeEmulator() as emu:
        user = emu.connect("carol", brokerage="ALPACA")
        secrets = MemorySecretStore()
        secrets.put(user.user_id, user.user_secret)
        audit_key = AUDIT_SECRET[:10] + secret  # the audit key itself must not land in the tables either
        with SafeSnapTradeClient(
            client_id=emu.client_id,
            consumer_key=emu.consumer_key,
            environment="sandbox",
            base_url=emu.base_url,
            secret_store=secrets,
            audit_key=audit_key,
            audit_store_url=f"sqlite:///{db}",
        ) as client:
            client.list_accounts(user.user_id)
            client.get_positions(user.user_id, user.account_ids[0])
            client.register_user("dave")
            client.rotate_user_secret(user.user_id)
            used = [emu.consumer_key, user.user_secret, secrets.get(user.user_id), secrets.get("dave"), audit_key]
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert "carol" in dump  # the search does see the tables' content
    assert not [s for s in used if s and _leaks(dump, s)]


def test_verified_webhooks_are_audited_through_the_receivers_hook(trail):
    import time as clock

    from aims_snaptrade.compliance import audit_webhooks
    from aims_snaptrade.webhooks import WebhookReceiver, sign_webhook

    key = "webhook-consumer-key-0123456789abcdef"
    handled = []
    payload = {
        "webhookId": "wh-1",
        "clientId": "AIMS",
        "eventTimestamp": clock.strftime("%Y-%m-%dT%H:%M:%SZ", clock.gmtime()),
        "userId": "frank",
        "eventType": "ACCOUNT_HOLDINGS_UPDATED",
        "accountId": "acc-9",
    }
    body = json.dumps(payload)
    with WebhookReceiver(handled.append, consumer_key=key, on_verified=audit_webhooks(trail)) as receiver:
        assert receiver.handle({"Signature": sign_webhook(payload, key)}, body).status == 200
        assert receiver.handle({"Signature": "forged"}, body).status >= 400  # unverified: not recorded
    (record,) = trail.tail(10)
    assert (record.kind, record.action, record.user_id, record.account_id) == (
        "webhook",
        "webhook.ACCOUNT_HOLDINGS_UPDATED",
        "frank",
        "acc-9",
    )
    assert record.to_json()["detail"]["webhook_id"] == "wh-1"
    assert len(handled) == 1
    assert key not in json.dumps(record.to_json())
