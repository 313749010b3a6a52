"""Every way a delivery can end, through both drivers: the exact answer SnapTrade gets (status,
outcome, JSON body, headers, the event) and the log line an operator reads (docs/webhooks.md,
"What SnapTrade is answered" and "What the receiver logs")."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from webhook_helpers import KEY, payload, signed

from aims_snaptrade.webhooks import (
    MemoryWebhookDedupeStore,
    WebhookEvent,
    WebhookReceiver,
    WebhookResponse,
)

Driver = Callable[[WebhookReceiver, dict[str, str], bytes], WebhookResponse]


def blocking(receiver: WebhookReceiver, headers: dict[str, str], body: bytes) -> WebhookResponse:
    return receiver.handle(headers, body)


def awaiting(receiver: WebhookReceiver, headers: dict[str, str], body: bytes) -> WebhookResponse:
    return asyncio.run(receiver.ahandle(headers, body))


DRIVERS = pytest.mark.parametrize("drive", [blocking, awaiting], ids=["sync", "async"])
JSON = ("content-type", "application/json")


def expect(
    response: WebhookResponse,
    status: int,
    content: dict[str, Any],
    *,
    retry_after: int | None = None,
    event_id: str | None = None,
) -> None:
    """The answer is exactly this: status, outcome, compact JSON body, headers, and the event when verified."""
    assert (response.status, response.outcome) == (status, content["status"])
    assert response.body == json.dumps(content, separators=(",", ":")).encode()
    assert response.headers == ((JSON,) if retry_after is None else (JSON, ("retry-after", str(retry_after))))
    if event_id is None:
        assert response.event is None
    else:
        assert response.event is not None and response.event.webhook_id == event_id


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[tuple[str, str]]]:
    caplog.set_level(logging.DEBUG, logger="aims_snaptrade.webhooks")

    def lines() -> list[tuple[str, str]]:
        found = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "aims_snaptrade.webhooks"]
        caplog.clear()
        return found

    return lines


class Handler:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def __call__(self, event: WebhookEvent) -> None:
        self.calls.append(event.webhook_id)
        if self.fail:
            raise RuntimeError("the handler broke")


class Store(MemoryWebhookDedupeStore):
    """A memory store whose calls can be made to fail, or ``complete`` to find its claim lapsed."""

    def __init__(self, failing: tuple[str, ...] = (), lapsed: bool = False) -> None:
        super().__init__()
        self.failing = failing
        self.lapsed = lapsed
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _maybe_fail(self, method: str, args: tuple[Any, ...]) -> None:
        self.calls.append((method, args))
        if method in self.failing:
            raise ConnectionError(f"{method} backend down")

    def claim(self, webhook_id: str, token: str, lease_seconds: float) -> Any:
        self._maybe_fail("claim", (webhook_id, token, lease_seconds))
        return super().claim(webhook_id, token, lease_seconds)

    def complete(self, webhook_id: str, token: str, retention_seconds: float) -> bool:
        self._maybe_fail("complete", (webhook_id, token, retention_seconds))
        return False if self.lapsed else super().complete(webhook_id, token, retention_seconds)

    def release(self, webhook_id: str, token: str) -> bool:
        self._maybe_fail("release", (webhook_id, token))
        return super().release(webhook_id, token)


@DRIVERS
def test_processed_then_duplicate(drive: Driver, logged: Callable[[], list[tuple[str, str]]]) -> None:
    store = Store()
    receiver = WebhookReceiver(Handler(), consumer_key=KEY, dedupe=store, lease_seconds=77, retention_seconds=99_999)
    body = payload("CONNECTION_BROKEN")
    wid = body["webhookId"]
    expect(drive(receiver, *signed(body)), 200, {"status": "processed", "webhookId": wid}, event_id=wid)
    assert logged() == []
    expect(drive(receiver, *signed(body)), 200, {"status": "duplicate", "webhookId": wid}, event_id=wid)
    assert logged() == [("INFO", f"Webhook {wid} (CONNECTION_BROKEN) was processed before; not again.")]
    key = receiver.claim_key(wid)
    (claim, token, lease), (_, done_token, retention) = store.calls[0][1], store.calls[1][1]
    assert (claim, lease, retention, done_token) == (key, 77.0, 99_999.0, token)
    assert [method for method, _ in store.calls] == ["claim", "complete", "claim"]


@DRIVERS
def test_in_progress_elsewhere_asks_for_a_retry_after_the_lease(
    drive: Driver, logged: Callable[[], list[tuple[str, str]]]
) -> None:
    store = MemoryWebhookDedupeStore()
    handler = Handler()
    receiver = WebhookReceiver(handler, consumer_key=KEY, dedupe=store, lease_seconds=120.9)
    body = payload()
    wid = body["webhookId"]
    store.claim(receiver.claim_key(wid), "another-replica", 60)
    expect(
        drive(receiver, *signed(body)), 409, {"status": "in_progress", "webhookId": wid}, retry_after=120, event_id=wid
    )
    assert logged() == [("INFO", f"Webhook {wid} is being processed by another holder.")]
    assert handler.calls == []


@DRIVERS
def test_refusals_name_the_error_class_and_its_message(
    drive: Driver, logged: Callable[[], list[tuple[str, str]]]
) -> None:
    handler = Handler()
    audited: list[str] = []
    receiver = WebhookReceiver(
        handler, consumer_key=KEY, tolerance=60, on_verified=lambda e: audited.append(e.webhook_id)
    )
    headers, raw = signed(payload())
    old_headers, old = signed(payload(when=time.time() - 600))  # inside the default 6 h, outside this receiver's 60 s
    cases = [
        ({}, raw, 401, "SnapTradeWebhookSignatureError", "The webhook has no Signature header."),
        (
            {"Signature": signed(payload(), "other-key")[0]["Signature"]},
            raw,
            401,
            "SnapTradeWebhookSignatureError",
            "The webhook signature does not match its payload.",
        ),
        (headers, b"[]", 400, "SnapTradeWebhookMalformedError", "The webhook body must be a JSON object."),
        (old_headers, old, 401, "SnapTradeWebhookStaleError", None),
    ]
    for case_headers, body, status, error, message in cases:
        response = drive(receiver, case_headers, body)
        content = json.loads(response.body)
        if message is None:  # the stale message carries the measured age
            message = content["message"]
            assert message.startswith("The webhook event is 60") and message.endswith(
                "s old, outside the 60 s replay window."
            )
        expect(response, status, {"status": "rejected", "error": error, "message": message})
        assert logged() == [("WARNING", f"Refused a webhook delivery ({error}): {message}")]
    assert handler.calls == [] and audited == []


@DRIVERS
def test_a_failing_audit_hook_answers_503_and_logs_the_cause(
    drive: Driver, logged: Callable[[], list[tuple[str, str]]]
) -> None:
    def audit(event: WebhookEvent) -> None:
        raise OSError(f"audit trail unavailable, key {KEY}")

    handler = Handler()
    receiver = WebhookReceiver(handler, consumer_key=KEY, on_verified=audit)
    body = payload()
    wid = body["webhookId"]
    expect(
        drive(receiver, *signed(body)), 503, {"status": "unavailable", "webhookId": wid}, retry_after=60, event_id=wid
    )
    [(level, line)] = logged()
    assert level == "ERROR"
    assert line.startswith(
        f"The on_verified hook failed for webhook {wid}: builtins.OSError: audit trail unavailable, key "
    )
    assert KEY not in line  # masked
    assert handler.calls == []


@DRIVERS
def test_a_failing_claim_answers_503_and_logs_the_cause(
    drive: Driver, logged: Callable[[], list[tuple[str, str]]]
) -> None:
    handler = Handler()
    receiver = WebhookReceiver(handler, consumer_key=KEY, dedupe=Store(failing=("claim",)))
    body = payload()
    wid = body["webhookId"]
    expect(
        drive(receiver, *signed(body)), 503, {"status": "unavailable", "webhookId": wid}, retry_after=60, event_id=wid
    )
    assert logged() == [("ERROR", f"Cannot claim webhook {wid}: builtins.ConnectionError: claim backend down")]
    assert handler.calls == []


@DRIVERS
def test_a_failing_handler_answers_500_and_releases_its_claim(
    drive: Driver, logged: Callable[[], list[tuple[str, str]]]
) -> None:
    store = Store()
    handler = Handler(fail=True)
    receiver = WebhookReceiver(handler, consumer_key=KEY, dedupe=store)
    body = payload("ACCOUNT_REMOVED")
    wid = body["webhookId"]
    expect(drive(receiver, *signed(body)), 500, {"status": "failed", "webhookId": wid}, event_id=wid)
    assert logged() == [
        ("ERROR", f"The handler failed on webhook {wid} (ACCOUNT_REMOVED): builtins.RuntimeError: the handler broke")
    ]
    (_, (key, token, _)), release = store.calls
    assert release == ("release", (key, token))
    handler.fail = False
    expect(drive(receiver, *signed(body)), 200, {"status": "processed", "webhookId": wid}, event_id=wid)


@DRIVERS
def test_a_failing_release_still_answers_500_and_the_claim_waits_for_its_lease(
    drive: Driver, logged: Callable[[], list[tuple[str, str]]]
) -> None:
    handler = Handler(fail=True)
    receiver = WebhookReceiver(handler, consumer_key=KEY, dedupe=Store(failing=("release",)))
    body = payload()
    wid = body["webhookId"]
    expect(drive(receiver, *signed(body)), 500, {"status": "failed", "webhookId": wid}, event_id=wid)
    assert logged() == [
        ("ERROR", f"The handler failed on webhook {wid} (CONNECTION_ADDED): builtins.RuntimeError: the handler broke"),
        ("ERROR", f"Cannot release webhook {wid}: builtins.ConnectionError: release backend down"),
    ]
    handler.fail = False
    expect(
        drive(receiver, *signed(body)), 409, {"status": "in_progress", "webhookId": wid}, retry_after=300, event_id=wid
    )


@DRIVERS
@pytest.mark.parametrize("how", ["raises", "lapsed"])
def test_a_completion_that_does_not_stick_is_still_a_200_with_a_warning(
    drive: Driver, how: str, logged: Callable[[], list[tuple[str, str]]]
) -> None:
    store = Store(failing=("complete",)) if how == "raises" else Store(lapsed=True)
    handler = Handler()
    receiver = WebhookReceiver(handler, consumer_key=KEY, dedupe=store)
    body = payload()
    wid = body["webhookId"]
    expect(drive(receiver, *signed(body)), 200, {"status": "processed", "webhookId": wid}, event_id=wid)
    warning = ("WARNING", f"Webhook {wid} was processed after its claim lapsed; raise lease_seconds.")
    if how == "raises":
        error = ("ERROR", f"Cannot record webhook {wid} as processed: builtins.ConnectionError: complete backend down")
        assert logged() == [error, warning]
    else:
        assert logged() == [warning]
    assert handler.calls == [wid]


class AsyncCallable:
    """An object whose ``__call__`` is a coroutine function (``inspect.iscoroutinefunction`` says no)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, event: WebhookEvent) -> None:
        await asyncio.sleep(0)
        self.seen.append(event.webhook_id)


@DRIVERS
def test_handlers_and_hooks_returning_awaitables_are_awaited(drive: Driver) -> None:
    handler, hook = AsyncCallable(), AsyncCallable()
    receiver = WebhookReceiver(handler, consumer_key=KEY, on_verified=hook)
    body = payload()
    assert drive(receiver, *signed(body)).outcome == "processed"
    assert handler.seen == hook.seen == [body["webhookId"]]
