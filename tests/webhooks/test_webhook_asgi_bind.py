"""A service mounts the webhook app at import and binds the receiver in its lifespan, built by the
client with the client's own audit trail: 503 (redelivered by SnapTrade) before and after, the
delivery processed and audited once while bound."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from webhook_helpers import KEY, payload, signed

from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient, Settings
from aims_snaptrade.compliance.factory import open_audit_trail
from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.webhooks import WebhookASGIApp


async def post(app: WebhookASGIApp, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await app(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, sent[1]["body"]


def client_settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "client_id": "AIMS-TEST",
        "consumer_key": KEY,
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:9/api/v1",
        "secret_store_url": "memory://",
        "webhook_dedupe_url": f"sqlite:///{tmp_path}/dedupe.db",
        **extra,
    }


def test_mounted_unbound_answers_503_then_bound_processes_and_audits_once(tmp_path: Path) -> None:
    app = WebhookASGIApp()  # at import: no client yet
    event = payload("CONNECTION_ADDED", brokerageAuthorizationId="c1")
    headers, body = signed(event)
    status, answer_headers, _ = asyncio.run(post(app, headers, body))
    assert status == 503 and answer_headers["retry-after"] == "60"
    seen: list[str] = []
    settings = client_settings(tmp_path, audit_key="a" * 32, audit_store_url=f"sqlite:///{tmp_path}/other.db")
    # The service's own trail (not the one the settings name): the receiver must write to it.
    trail = open_audit_trail(f"sqlite:///{tmp_path}/audit.db", Settings(**settings))
    with SafeSnapTradeClient(**settings, audit=trail) as client:  # the lifespan
        receiver = app.bind(client.webhook_receiver(lambda e: seen.append(e.webhook_id)))
        first = asyncio.run(post(app, headers, body))
        again = asyncio.run(post(app, headers, body))
        assert (first[0], json.loads(first[2])["status"]) == (200, "processed")
        assert (again[0], json.loads(again[2])["status"]) == (200, "duplicate")
        assert seen == [event["webhookId"]]
        records = [r for r in client.audit_trail.tail(10) if r.kind == "webhook"]
        assert len(records) == 2 and client.audit_trail.verify().ok  # every verified delivery, one chain
        assert app.unbind() is receiver
        receiver.close()
    trail.close()
    assert not (tmp_path / "other.db").exists()  # no second trail opened behind the client's back
    assert asyncio.run(post(app, headers, body))[0] == 503


async def test_the_async_client_builds_its_receiver_without_an_audit_trail(tmp_path: Path) -> None:
    async with AsyncSafeSnapTradeClient(**client_settings(tmp_path)) as client:
        assert client.audit_trail is None
        with client.webhook_receiver(lambda e: None) as receiver:
            app = WebhookASGIApp(receiver)
            status, _, _ = await post(app, *signed(payload()))
            assert status == 200


def test_bind_refuses_what_is_not_a_receiver() -> None:
    with pytest.raises(SnapTradeConfigurationError, match="WebhookReceiver"):
        WebhookASGIApp().bind(object())  # type: ignore[arg-type]


def test_webhook_receiver_names_an_unknown_option(tmp_path: Path) -> None:
    with SafeSnapTradeClient(**client_settings(tmp_path)) as client:
        with pytest.raises(SnapTradeConfigurationError, match=r"'retention'.*retention_seconds"):
            client.webhook_receiver(lambda e: None, retention=5)
        with pytest.raises(SnapTradeConfigurationError, match="tolerance"):
            client.webhook_receiver(lambda e: None, tolerance=-1)
