"""The receiver's decisions through both drivers (blocking and async), the WSGI app and the ASGI app."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from webhook_helpers import KEY, payload, signed

from aims_snaptrade.webhooks import (
    AccountHoldingsUpdatedEvent,
    MemoryWebhookDedupeStore,
    WebhookASGIApp,
    WebhookEvent,
    WebhookReceiver,
    WebhookResponse,
    WebhookWSGIApp,
)
from aims_snaptrade.webhooks.dedupe import RedisWebhookDedupeStore

Driver = Callable[[WebhookReceiver, dict[str, str], bytes], WebhookResponse]


def blocking(receiver: WebhookReceiver, headers: dict[str, str], body: bytes) -> WebhookResponse:
    return receiver.handle(headers, body)


def awaiting(receiver: WebhookReceiver, headers: dict[str, str], body: bytes) -> WebhookResponse:
    return asyncio.run(receiver.ahandle(headers, body))


DRIVERS = pytest.mark.parametrize("drive", [blocking, awaiting], ids=["sync", "async"])


class Recorder:
    """A handler that records events and fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[WebhookEvent] = []
        self.failures = failures

    def __call__(self, event: WebhookEvent) -> None:
        self.calls.append(event)
        if len(self.calls) <= self.failures:
            raise RuntimeError(f"handler exploded holding {KEY}")


def body_of(response: WebhookResponse) -> dict[str, Any]:
    return dict(json.loads(response.body))


@DRIVERS
def test_processed_once_then_duplicate(drive: Driver) -> None:
    handler = Recorder()
    receiver = WebhookReceiver(handler, consumer_key=KEY)
    headers, raw = signed(payload("ACCOUNT_HOLDINGS_UPDATED", details={"success": False}))
    first, second = drive(receiver, headers, raw), drive(receiver, headers, raw)
    assert (first.status, first.outcome) == (200, "processed")
    assert (second.status, second.outcome) == (200, "duplicate")
    assert len(handler.calls) == 1
    event = handler.calls[0]
    assert isinstance(event, AccountHoldingsUpdatedEvent)
    assert event.success is False
    assert body_of(second) == {"status": "duplicate", "webhookId": event.webhook_id}


@DRIVERS
def test_handler_failure_releases_the_claim_so_the_redelivery_is_processed_once(drive: Driver) -> None:
    handler = Recorder(failures=1)
    receiver = WebhookReceiver(handler, consumer_key=KEY)
    headers, raw = signed(payload())
    outcomes = [drive(receiver, headers, raw) for _ in range(3)]
    assert [(r.status, r.outcome) for r in outcomes] == [(500, "failed"), (200, "processed"), (200, "duplicate")]
    assert len(handler.calls) == 2  # the failed attempt and the one processing
    assert KEY.encode() not in outcomes[0].body


@DRIVERS
def test_a_claim_held_elsewhere_is_answered_409_so_snaptrade_redelivers(drive: Driver) -> None:
    store = MemoryWebhookDedupeStore()
    handler = Recorder()
    receiver = WebhookReceiver(handler, consumer_key=KEY, dedupe=store, lease_seconds=120)
    body = payload()
    assert store.claim(receiver.claim_key(body["webhookId"]), "another-replica", 60) == "claimed"
    response = drive(receiver, *signed(body))
    assert (response.status, response.outcome) == (409, "in_progress")
    assert ("retry-after", "120") in response.headers
    assert handler.calls == []


@DRIVERS
def test_async_and_sync_handlers_work_in_both_drivers(drive: Driver) -> None:
    seen: list[str] = []

    async def handler(event: WebhookEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.webhook_id)

    receiver = WebhookReceiver(handler, consumer_key=KEY)
    body = payload()
    assert drive(receiver, *signed(body)).outcome == "processed"
    assert seen == [body["webhookId"]]


@DRIVERS
def test_the_audit_hook_sees_every_verified_delivery_and_blocks_processing_when_it_fails(drive: Driver) -> None:
    audited: list[str] = []
    broken = [True]

    def audit(event: WebhookEvent) -> None:
        if broken[0]:
            raise OSError("audit trail unavailable")
        audited.append(event.webhook_id)

    handler = Recorder()
    receiver = WebhookReceiver(handler, consumer_key=KEY, on_verified=audit)
    body = payload()
    headers, raw = signed(body)
    assert drive(receiver, headers, raw).status == 503
    assert handler.calls == []
    broken[0] = False
    assert [drive(receiver, headers, raw).outcome for _ in range(2)] == ["processed", "duplicate"]
    assert audited == [body["webhookId"]] * 2
    assert drive(receiver, {"Signature": "forged"}, raw).status == 401
    assert len(audited) == 2  # nothing unverified reaches the audit trail


@DRIVERS
def test_an_unreachable_dedupe_store_answers_503_and_processes_nothing(drive: Driver) -> None:
    handler = Recorder()
    store = RedisWebhookDedupeStore("redis://127.0.0.1:1/0")
    receiver = WebhookReceiver(handler, consumer_key=KEY, dedupe=store)
    response = drive(receiver, *signed(payload()))
    store.close()
    assert (response.status, response.outcome) == (503, "unavailable")
    assert handler.calls == []


@DRIVERS
def test_refusals_answer_401_or_400_without_key_or_signature(drive: Driver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handler = Recorder()
    receiver = WebhookReceiver(handler, consumer_key=KEY, tolerance=60)
    headers, raw = signed(payload())
    forged_headers, _ = signed(payload(), key="another-key-of-someone-else")
    stale_headers, stale = signed(payload(when=0))
    cases = [
        ({**headers, "Signature": forged_headers["Signature"]}, raw, 401),
        ({}, raw, 401),
        (stale_headers, stale, 401),
        (headers, b"not json", 400),
        (headers, raw[:-1], 400),
    ]
    for case_headers, body, status in cases:
        response = drive(receiver, case_headers, body)
        assert (response.status, response.outcome) == (status, "rejected")
        for secret in (KEY, headers["Signature"], forged_headers["Signature"], stale_headers["Signature"]):
            assert secret.encode() not in response.body
    assert handler.calls == []
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Refused a webhook delivery" in logged
    for secret in (KEY, headers["Signature"], forged_headers["Signature"]):
        assert secret not in logged


def test_the_handlers_exception_text_is_redacted_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    receiver = WebhookReceiver(Recorder(failures=1), consumer_key=KEY)
    assert receiver.handle(*signed(payload())).status == 500
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "handler exploded" in logged
    assert KEY not in logged


def test_wsgi_app() -> None:
    handler = Recorder()
    app = WebhookWSGIApp(WebhookReceiver(handler, consumer_key=KEY))
    headers, raw = signed(payload())
    answers: list[str] = []

    def call(method: str, body: bytes, extra: dict[str, str]) -> bytes:
        environ = {
            "REQUEST_METHOD": method,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in extra.items()},
        }
        return b"".join(app(environ, lambda status, _headers: answers.append(status)))

    assert json.loads(call("POST", raw, headers))["status"] == "processed"
    assert json.loads(call("POST", raw, headers))["status"] == "duplicate"
    call("GET", b"", {})
    call("POST", b"{}", {})
    assert answers == ["200 OK", "200 OK", "405 Method Not Allowed", "401 Unauthorized"]
    assert len(handler.calls) == 1


def test_asgi_app_refuses_other_methods_and_huge_bodies() -> None:
    app = WebhookASGIApp(WebhookReceiver(Recorder(), consumer_key=KEY), max_body_bytes=10)

    async def call(method: str, chunks: list[bytes]) -> int:
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": method, "headers": []}, receive, send)
        return int(sent[0]["status"])

    assert asyncio.run(call("GET", [b""])) == 405
    assert asyncio.run(call("POST", [b"123456", b"123456"])) == 413
    assert asyncio.run(call("POST", [b"{}"])) == 401


def test_from_settings_takes_key_store_and_window_from_the_environment(tmp_path: Any) -> None:
    from aims_snaptrade.settings import Settings
    from aims_snaptrade.webhooks import SQLiteWebhookDedupeStore

    settings = Settings.from_env(
        {
            "SNAPTRADE_CLIENT_ID": "AIMS-TEST",
            "SNAPTRADE_CONSUMER_KEY": KEY,
            "SNAPTRADE_ENVIRONMENT": "sandbox",
            "SNAPTRADE_WEBHOOK_DEDUPE_URL": f"sqlite:///{tmp_path}/claims.db",
            "SNAPTRADE_WEBHOOK_TOLERANCE": "30",
        }
    )
    handler = Recorder()
    with WebhookReceiver.from_settings(handler, settings) as receiver:
        assert isinstance(receiver.dedupe, SQLiteWebhookDedupeStore)
        assert receiver.tolerance == 30.0
        assert receiver.handle(*signed(payload())).outcome == "processed"
        assert receiver.handle(*signed(payload(when=0))).status == 401
    assert len(handler.calls) == 1


def test_verified_deliveries_land_in_the_compliance_audit_trail(tmp_path: Any) -> None:
    """``on_verified=audit_webhooks(trail)``: every verified delivery, duplicates too, and nothing forged."""
    import secrets as random_secrets

    from aims_snaptrade.compliance import AuditKey, SQLiteAuditTrail, audit_webhooks

    trail = SQLiteAuditTrail(tmp_path / "audit.db", AuditKey(random_secrets.token_urlsafe(32)))
    handler = Recorder()
    receiver = WebhookReceiver(handler, consumer_key=KEY, on_verified=audit_webhooks(trail))
    body = payload("CONNECTION_BROKEN", brokerageAuthorizationId="auth-9")
    headers, raw = signed(body)
    outcomes = [receiver.handle(headers, raw).outcome for _ in range(2)]
    assert receiver.handle({"Signature": "Zm9yZ2Vk"}, raw).status == 401
    try:
        records = trail.tail(10)
        assert outcomes == ["processed", "duplicate"]
        assert [r.action for r in records] == ["webhook.CONNECTION_BROKEN"] * 2
        assert all(json.loads(r.detail)["webhook_id"] == body["webhookId"] for r in records)
        assert trail.verify().ok
    finally:
        trail.close()


def test_production_refuses_claims_that_die_with_the_process() -> None:
    from aims_snaptrade.errors import SnapTradeConfigurationError
    from aims_snaptrade.settings import Settings

    env = {"SNAPTRADE_CLIENT_ID": "AIMS-TEST", "SNAPTRADE_CONSUMER_KEY": KEY, "SNAPTRADE_ENVIRONMENT": "production"}
    with pytest.raises(SnapTradeConfigurationError, match="production refuses the memory webhook dedupe store"):
        WebhookReceiver.from_settings(
            Recorder(), Settings.from_env({**env, "SNAPTRADE_WEBHOOK_DEDUPE_URL": "memory://"})
        )


@DRIVERS
def test_a_custom_store_failing_with_its_own_exception_answers_503(drive: Driver) -> None:
    class Broken(MemoryWebhookDedupeStore):
        def claim(self, webhook_id: str, token: str, lease_seconds: float) -> Any:
            raise ConnectionError(f"backend down, key {KEY}")

    handler = Recorder()
    response = drive(WebhookReceiver(handler, consumer_key=KEY, dedupe=Broken()), *signed(payload()))
    assert (response.status, response.outcome) == (503, "unavailable")
    assert handler.calls == []
