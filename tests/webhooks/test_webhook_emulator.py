"""The emulator's webhook emitter on its own: backlog, retry schedule, journal, validation."""

from __future__ import annotations

import pytest
from webhook_helpers import free_port

from aims_snaptrade.testing import EmulatorConfig, SnapTradeEmulator, WebhookFault


def test_an_unreachable_receiver_gets_the_first_attempt_and_every_retry_then_nothing() -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks"  # nobody listens: every attempt fails
    with SnapTradeEmulator(webhook_urls=(url,), webhook_retry_delays=(0.05, 0.1, 0.2)) as emu:
        emu.create_user("alice")
        assert emu.webhooks.wait_idle(30)
        attempts = emu.journal.entries(operation="webhook")
    assert [(e.attempt, e.status, e.processed) for e in attempts] == [(n, None, False) for n in (1, 2, 3, 4)]
    assert {(e.event_type, e.user_id, e.path, e.url) for e in attempts} == {("USER_REGISTERED", "alice", "/hooks", url)}
    assert len({e.webhook_id for e in attempts}) == 1  # the same webhook, redelivered


def test_events_before_start_wait_in_a_backlog_and_urls_rotate() -> None:
    urls = [f"http://127.0.0.1:{free_port()}/a", f"http://127.0.0.1:{free_port()}/b"]
    emu = SnapTradeEmulator(webhook_urls=tuple(urls), webhook_retry_delays=())
    emu.create_user("alice")
    emu.create_user("bob")
    assert [p["userId"] for p in emu.webhooks.sent] == ["alice", "bob"]
    assert emu.journal.entries(operation="webhook") == []
    emu.webhooks.faults.add(WebhookFault.delay(0.05), event_type="USER_REGISTERED", nth=2)
    with emu:
        assert emu.webhooks.wait_idle(30)
        attempts = emu.journal.entries(operation="webhook")
    assert sorted(e.url for e in attempts) == sorted(urls)  # round-robin over the two
    assert sorted(e.fault or "" for e in attempts) == ["", "delay"]


def test_payloads_have_snaptrades_api_key_shape() -> None:
    with SnapTradeEmulator() as emu:
        user = emu.connect("alice")
        payloads = emu.webhooks.sent
    assert [p["eventType"] for p in payloads[:2]] == ["USER_REGISTERED", "CONNECTION_ADDED"]
    for payload in payloads:
        assert {"webhookId", "clientId", "eventTimestamp", "userId", "eventType"} <= set(payload)
        assert payload["clientId"] == emu.client_id
    added = payloads[1]
    assert added["brokerageAuthorizationId"] == user.authorization_id
    holdings = [p for p in payloads if p["eventType"] == "ACCOUNT_HOLDINGS_UPDATED"]
    assert {p["accountId"] for p in holdings} == set(user.account_ids)
    assert all(p["details"] == {"success": True} for p in holdings)


def test_bad_webhook_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="webhook_retry_delays"):
        EmulatorConfig(webhook_retry_delays=(-1.0,))
    with pytest.raises(ValueError, match="webhook_timeout"):
        EmulatorConfig(webhook_timeout=0)
    with pytest.raises(ValueError, match="part must be"):
        WebhookFault.corrupt("headers")  # type: ignore[arg-type]
    with SnapTradeEmulator() as emu, pytest.raises(ValueError, match="unknown client id"):
        emu.webhooks.emit("nobody", "USER_REGISTERED", "alice")
