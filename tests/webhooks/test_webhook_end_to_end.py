"""End to end: the emulator delivers signed webhooks to uvicorn processes running the receiver.

Real HTTP, real processes, real Redis and PostgreSQL. The emulator's retry schedule is shrunk
to fractions of a second; faults drop, delay, duplicate and corrupt chosen deliveries.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_helpers import POSTGRES_URL, REDIS_URL, UvicornProcess, table_for

from aims_snaptrade.testing import ClientCredentials, SnapTradeEmulator, WebhookFault, complete_portal_link
from aims_snaptrade.webhooks import EVENT_TYPES, sign_webhook

RETRIES = (0.3, 0.6, 1.2)
CLIENT_ID = "AIMS-WEBHOOKS-E2E"


@pytest.fixture
def consumer_key() -> str:
    return "ck-" + secrets.token_urlsafe(24)


@pytest.fixture
def emulator(consumer_key: str) -> Iterator[SnapTradeEmulator]:
    with SnapTradeEmulator(clients=(ClientCredentials(CLIENT_ID, consumer_key),), webhook_retry_delays=RETRIES) as emu:
        yield emu


def serve(
    tmp_path: Path, consumer_key: str, dedupe_url: str, count: int, framework: str = "asgi"
) -> list[UvicornProcess]:
    env = {
        "WEBHOOK_KEY": consumer_key,
        "WEBHOOK_DEDUPE_URL": dedupe_url,
        "WEBHOOK_RECORD": str(tmp_path / "processed.jsonl"),
        "WEBHOOK_FRAMEWORK": framework,
    }
    servers = [UvicornProcess("webhook_service:create_app", env, tmp_path / f"server{n}.log") for n in range(count)]
    for server in servers:
        server.wait_ready()
    return servers


def processed(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "processed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_no_secret_in(outputs: list[str], emu: SnapTradeEmulator, consumer_key: str) -> None:
    signatures = [sign_webhook(p, consumer_key) for p in emu.webhooks.sent]
    for output in outputs:
        assert consumer_key not in output
        for signature in signatures:
            assert signature not in output


def test_every_event_type_reaches_the_handler_once(
    tmp_path: Path, emulator: SnapTradeEmulator, consumer_key: str
) -> None:
    (server,) = serve(tmp_path, consumer_key, f"sqlite:///{tmp_path}/claims.db", 1, framework="fastapi")
    emu = emulator
    emu.webhooks.urls = [server.url + "snaptrade/"]
    faults = emu.webhooks.faults
    faults.add(WebhookFault.drop(), event_type="USER_REGISTERED")
    faults.add(WebhookFault.corrupt("body"), event_type="CONNECTION_ADDED")
    faults.add(WebhookFault.corrupt("signature"), event_type="CONNECTION_BROKEN")
    faults.add(WebhookFault.duplicate(), event_type="NEW_ACCOUNT_AVAILABLE")
    faults.add(WebhookFault.delay(0.2), event_type="TRADE_UPDATE")
    try:
        sdk = emu.sdk(retries=False)
        secret = sdk.authentication.register_snap_trade_user(user_id="fail-once-alice").body["userSecret"]
        who = {"user_id": "fail-once-alice", "user_secret": secret}
        link = sdk.authentication.login_snap_trade_user(connection_type="trade", **who).body["redirectURI"]
        auth = complete_portal_link(link, brokerage="ALPACA")
        account = next(p["accountId"] for p in emu.webhooks.sent if p["eventType"] == "NEW_ACCOUNT_AVAILABLE")
        sdk.connections.refresh_brokerage_authorization(authorization_id=auth, **who)
        order = sdk.trading.place_force_order(
            account_id=account,
            action="BUY",
            symbol="TSLA",
            order_type="Limit",
            price=1.0,
            time_in_force="GTC",
            units=1.0,
            **who,
        ).body
        sdk.trading.cancel_order(account_id=account, brokerage_order_id=order["brokerage_order_id"], **who)
        sdk.connections.disable_brokerage_authorization(authorization_id=auth, **who)
        link = sdk.authentication.login_snap_trade_user(reconnect=auth, **who).body["redirectURI"]
        complete_portal_link(link)
        sdk.connections.delete_connection(connection_id=auth, **who)
        sdk.authentication.delete_snap_trade_user(user_id="fail-once-alice")
        for event_type, fields in [
            ("CONNECTION_ATTEMPTED", {"connectionAttemptedResult": "SUCCESS"}),
            ("CONNECTION_UPDATED", {"brokerageAuthorizationId": auth}),
            ("CONNECTION_FAILED", {}),
            ("TRADE_DETECTION", {"accountId": account}),
            ("ACCOUNT_HOLDINGS_UPDATED", {"accountId": account, "details": {"success": False}}),
            ("SOMETHING_SNAPTRADE_ADDS_LATER", {}),
        ]:
            emu.webhooks.emit(CLIENT_ID, event_type, "bob", **fields)
        assert emu.webhooks.wait_idle(60)

        # A forged delivery straight to the server: refused, and the answer carries no secret.
        forged = urllib.request.Request(
            server.url + "snaptrade/", data=b'{"eventType":"USER_DELETED"}', headers={"Signature": "Zm9yZ2Vk"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=10)
        assert refused.value.code == 401
        answer = refused.value.read().decode()
    finally:
        output = server.stop()

    sent = emu.webhooks.sent
    done = processed(tmp_path)
    assert Counter(d["webhookId"] for d in done) == Counter(p["webhookId"] for p in sent)  # each once
    assert {d["eventType"] for d in done} == set(EVENT_TYPES) | {"SOMETHING_SNAPTRADE_ADDS_LATER"}
    assert {d["type"] for d in done if d["eventType"] == "SOMETHING_SNAPTRADE_ADDS_LATER"} == {"GenericWebhookEvent"}
    assert {d["success"] for d in done if d["eventType"] == "ACCOUNT_HOLDINGS_UPDATED"} == {True, False}
    journal = emu.journal.entries(operation="webhook")
    assert {e.fault for e in journal} >= {"drop", "corrupt_body", "corrupt_signature", "duplicate", "delay"}
    by_fault = {e.fault: e for e in journal if e.fault}
    assert by_fault["drop"].status is None
    assert by_fault["corrupt_body"].status in (400, 401)
    assert by_fault["corrupt_signature"].status == 401
    for faulted in ("drop", "corrupt_body", "corrupt_signature"):
        retried = emu.journal.entries(webhook_id=by_fault[faulted].webhook_id)
        assert [e.processed for e in retried] == [False] * (len(retried) - 1) + [True]  # redelivered until done
        assert retried[-1].attempt >= 2
    first_attempts = [e for e in journal if e.user_id == "fail-once-alice" and e.attempt == 1 and not e.fault]
    assert first_attempts
    assert all(e.status == 500 for e in first_attempts)  # the handler failed, SnapTrade-style redelivery followed
    assert "Zm9yZ2Vk" not in answer  # the forged signature is not echoed
    assert_no_secret_in([output, answer], emu, consumer_key)


@pytest.mark.parametrize("backend", ["redis", "postgresql"])
def test_duplicated_deliveries_to_two_processes_are_processed_once(
    tmp_path: Path,
    emulator: SnapTradeEmulator,
    consumer_key: str,
    backend: str,
    redis_prefix: str,
    pg_schema: str,
) -> None:
    url = (
        f"{REDIS_URL}?prefix={redis_prefix}{tmp_path.name}:"
        if backend == "redis"
        else f"{POSTGRES_URL}?schema={pg_schema}&table={table_for(tmp_path)}"
    )
    servers = serve(tmp_path, consumer_key, url, 2)
    emu = emulator
    emu.webhooks.urls = [server.url for server in servers]
    emu.webhooks.faults.add(WebhookFault.duplicate(), times=None)  # every attempt reaches both processes
    try:
        emu.connect("carol", brokerage="ALPACA")
        emu.connect("fail-once-dave")
        for n in range(6):
            emu.webhooks.emit(CLIENT_ID, "TRADE_DETECTION", "carol", accountId=f"acc-{n}")
        assert emu.webhooks.wait_idle(60)
    finally:
        outputs = [server.stop() for server in servers]

    sent = emu.webhooks.sent
    done = processed(tmp_path)
    assert Counter(d["webhookId"] for d in done) == Counter(p["webhookId"] for p in sent)
    journal = emu.journal.entries(operation="webhook")
    for payload in sent:
        attempts = [e for e in journal if e.webhook_id == payload["webhookId"]]
        assert {e.url for e in attempts} == {server.url for server in servers}  # duplicated to both
        assert any(e.processed for e in attempts)
    failed_once = {e.webhook_id for e in journal if e.status == 500}
    assert failed_once == {p["webhookId"] for p in sent if p["userId"] == "fail-once-dave"}
    assert_no_secret_in(outputs, emu, consumer_key)
