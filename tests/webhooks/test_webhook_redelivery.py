"""The replay defence against SnapTrade's real delivery: retries of the same signed payload (same
``eventTimestamp``) after 30, 60 and 120 more minutes, on a moved clock; key rotation; the audit
hook from the settings."""

from __future__ import annotations

import json
import secrets
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from webhook_helpers import KEY, payload, signed

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.settings import Settings
from aims_snaptrade.webhooks import MemoryWebhookDedupeStore, WebhookEvent, WebhookReceiver
from aims_snaptrade.webhooks.verify import DEFAULT_TOLERANCE_SECONDS, MAX_AHEAD_SECONDS, SNAPTRADE_RETRY_DELAYS

T0 = 1_900_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FailingFirst:
    """A handler failing its first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []
        self.processed: list[str] = []

    def __call__(self, event: WebhookEvent) -> None:
        self.calls.append(event.webhook_id)
        if len(self.calls) <= self.failures:
            raise RuntimeError("the handler failed this time")
        self.processed.append(event.webhook_id)


def attempt_times(slack: list[float]) -> list[float]:
    """SnapTrade's attempts: the first at once, then after each retry delay (plus the sender's own slack)."""
    times, at = [0.0], 0.0
    for delay, late in zip(SNAPTRADE_RETRY_DELAYS, slack, strict=True):
        at += delay + late
        times.append(at)
    return times


def test_the_default_window_covers_snaptrades_whole_retry_schedule_with_margin() -> None:
    assert 1.5 * sum(SNAPTRADE_RETRY_DELAYS) <= DEFAULT_TOLERANCE_SECONDS
    receiver = WebhookReceiver(FailingFirst(0), consumer_key=KEY)
    assert receiver.tolerance == DEFAULT_TOLERANCE_SECONDS
    assert receiver.retention_seconds >= DEFAULT_TOLERANCE_SECONDS + MAX_AHEAD_SECONDS
    fields = Settings.model_fields["webhook_tolerance"]
    assert fields.default == DEFAULT_TOLERANCE_SECONDS


@settings(max_examples=60, deadline=None)
@given(
    failures=st.integers(0, 3),
    slack=st.lists(st.floats(0, 1800), min_size=3, max_size=3),
    late_replays=st.lists(st.floats(0, 1), min_size=1, max_size=4),
)
def test_every_delivery_on_the_retry_schedule_is_processed_once_and_replays_are_2xx_duplicates(
    failures: int, slack: list[float], late_replays: list[float]
) -> None:
    clock = Clock(T0)
    handler = FailingFirst(failures)
    receiver = WebhookReceiver(handler, consumer_key=KEY, dedupe=MemoryWebhookDedupeStore(clock=clock), now=clock)
    body = payload("ACCOUNT_HOLDINGS_UPDATED", when=T0, accountId="acc-1")
    headers, raw = signed(body)
    statuses = []
    for at in attempt_times(slack):
        clock.now = T0 + at
        response = receiver.handle(headers, raw)
        statuses.append(response.status)
        if response.status in (200, 201, 202, 204):
            break  # SnapTrade stops redelivering once one attempt is delivered
    assert statuses == [500] * failures + [200]
    assert handler.processed == [body["webhookId"]]
    # A captured copy replayed at any time inside the window: a 2xx duplicate, never processed again.
    for share in late_replays:
        clock.now = T0 + share * DEFAULT_TOLERANCE_SECONDS
        response = receiver.handle(headers, raw)
        assert (response.status, response.outcome) == (200, "duplicate")
    assert handler.processed == [body["webhookId"]]
    # Beyond the window: refused with a 4xx, whether or not it was processed before.
    clock.now = T0 + DEFAULT_TOLERANCE_SECONDS + 1
    refused = receiver.handle(headers, raw)
    assert (refused.status, json.loads(refused.body)["error"]) == (401, "SnapTradeWebhookStaleError")
    assert handler.processed == [body["webhookId"]]


@settings(max_examples=30, deadline=None, database=None)
@given(lease=st.floats(1, 3600), extra=st.floats(0, 30 * 24 * 3600))
def test_a_processed_id_is_remembered_for_the_retention_not_the_lease(lease: float, extra: float) -> None:
    """The claim protects the handler for ``lease_seconds``; the processed id is then kept ``retention_seconds``."""
    clock = Clock(T0)
    store = MemoryWebhookDedupeStore(clock=clock)
    retention = DEFAULT_TOLERANCE_SECONDS + MAX_AHEAD_SECONDS + extra
    handler = FailingFirst(0)
    receiver = WebhookReceiver(
        handler, consumer_key=KEY, dedupe=store, now=clock, lease_seconds=lease, retention_seconds=retention
    )
    body = payload(when=T0)
    assert receiver.handle(*signed(body)).outcome == "processed"
    claim_key = receiver.claim_key(body["webhookId"])
    clock.now = T0 + lease + 1  # the lease is over, the window still accepts the payload: a duplicate
    assert receiver.handle(*signed(body)).outcome == "duplicate"
    clock.now = T0 + retention - 1
    assert store.claim(claim_key, "probe", 1.0) == "processed"
    clock.now = T0 + retention + 1
    assert store.claim(claim_key, "probe", 1.0) == "claimed"
    assert handler.processed == [body["webhookId"]]


def test_a_payload_stamped_ahead_of_the_clock_is_held_to_the_clock_skew_only() -> None:
    clock = Clock(T0)
    receiver = WebhookReceiver(FailingFirst(0), consumer_key=KEY, now=clock)
    assert receiver.handle(*signed(payload(when=T0 + MAX_AHEAD_SECONDS - 1))).status == 200
    assert receiver.handle(*signed(payload(when=T0 + MAX_AHEAD_SECONDS + 1))).status == 401


@given(tolerance=st.floats(1, 10 * 24 * 3600), share=st.floats(0, 0.999))
def test_a_retention_shorter_than_the_window_is_refused_at_construction(tolerance: float, share: float) -> None:
    span = tolerance + min(tolerance, MAX_AHEAD_SECONDS)
    with pytest.raises(SnapTradeConfigurationError, match="retention_seconds") as refused:
        WebhookReceiver(FailingFirst(0), consumer_key=KEY, tolerance=tolerance, retention_seconds=span * share)
    assert KEY not in str(refused.value)
    WebhookReceiver(FailingFirst(0), consumer_key=KEY, tolerance=tolerance, retention_seconds=span).close()


KEYS = st.text(string.ascii_letters + string.digits + "-_+/=", min_size=8, max_size=60)


@settings(max_examples=40, deadline=None)
@given(current=KEYS, previous=KEYS, other=KEYS)
def test_during_a_rotation_the_previous_key_is_accepted_and_no_other(current: str, previous: str, other: str) -> None:
    if len({current, previous, other}) < 3:
        return
    handler = FailingFirst(0)
    receiver = WebhookReceiver(handler, consumer_key=current, previous_consumer_keys=[previous])
    assert receiver.handle(*signed(payload(), current)).outcome == "processed"
    assert receiver.handle(*signed(payload(), previous)).outcome == "processed"
    refused = receiver.handle(*signed(payload(), other))
    assert refused.status == 401
    for key in (current, previous, other):
        assert key not in refused.body.decode()
    assert len(handler.processed) == 2
    after = WebhookReceiver(handler, consumer_key=current)  # the overlap is over: the old key is refused
    assert after.handle(*signed(payload(), previous)).status == 401


def test_previous_keys_must_be_a_list_of_keys() -> None:
    with pytest.raises(SnapTradeConfigurationError, match="not one string"):
        WebhookReceiver(FailingFirst(0), consumer_key=KEY, previous_consumer_keys="old-key")  # type: ignore[arg-type]
    with pytest.raises(SnapTradeConfigurationError, match="non-empty"):
        WebhookReceiver(FailingFirst(0), consumer_key=KEY, previous_consumer_keys=[""])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "SNAPTRADE_CLIENT_ID": "AIMS-TEST",
        "SNAPTRADE_CONSUMER_KEY": KEY,
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_WEBHOOK_DEDUPE_URL": f"sqlite:///{tmp_path}/claims.db",
        "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{tmp_path}/secrets.db",
        **extra,
    }


def test_from_settings_audits_every_verified_webhook_when_an_audit_key_is_set(tmp_path: Path) -> None:
    from aims_snaptrade.compliance import AuditKey, SQLiteAuditTrail

    audit_key = secrets.token_urlsafe(32)
    env = _env(tmp_path, SNAPTRADE_AUDIT_KEY=audit_key, SNAPTRADE_AUDIT_STORE_URL=f"sqlite:///{tmp_path}/audit.db")
    handler = FailingFirst(0)
    body = payload("CONNECTION_BROKEN", brokerageAuthorizationId="auth-9")
    headers, raw = signed(body)
    with WebhookReceiver.from_settings(handler, Settings.from_env(env)) as receiver:
        outcomes = [receiver.handle(headers, raw).outcome for _ in range(2)]
        assert receiver.handle({"Signature": "Zm9yZ2Vk"}, raw).status == 401
    assert outcomes == ["processed", "duplicate"]
    trail = SQLiteAuditTrail(tmp_path / "audit.db", AuditKey(audit_key))
    try:
        records = trail.tail(10)
        assert [r.action for r in records] == ["webhook.CONNECTION_BROKEN"] * 2  # the explicit hook's records
        assert all(json.loads(r.detail)["webhook_id"] == body["webhookId"] for r in records)
        assert trail.verify().ok
    finally:
        trail.close()


def test_from_settings_without_an_audit_key_records_nothing_and_takes_the_previous_key(tmp_path: Path) -> None:
    old = "old-" + secrets.token_urlsafe(24)
    handler = FailingFirst(0)
    settings_ = Settings.from_env(_env(tmp_path, SNAPTRADE_PREVIOUS_CONSUMER_KEY=old))
    with WebhookReceiver.from_settings(handler, settings_) as receiver:
        assert receiver._on_verified is None
        assert receiver.handle(*signed(payload(), old)).outcome == "processed"
    assert not (tmp_path / "audit.db").exists()
    assert old not in repr(settings_)


def test_an_explicit_hook_replaces_the_settings_audit(tmp_path: Path) -> None:
    seen: list[Any] = []
    env = _env(tmp_path, SNAPTRADE_AUDIT_KEY=secrets.token_urlsafe(32))
    with WebhookReceiver.from_settings(FailingFirst(0), Settings.from_env(env), on_verified=seen.append) as receiver:
        assert receiver.handle(*signed(payload())).outcome == "processed"
    assert len(seen) == 1


@given(name=st.text(min_size=1, max_size=20).filter(lambda n: n.isidentifier()))
def test_from_settings_refuses_options_the_receiver_does_not_take(name: str) -> None:
    import inspect

    if name in inspect.signature(WebhookReceiver.__init__).parameters:
        return
    env = {"SNAPTRADE_CLIENT_ID": "AIMS-TEST", "SNAPTRADE_CONSUMER_KEY": KEY, "SNAPTRADE_ENVIRONMENT": "sandbox"}
    with pytest.raises(SnapTradeConfigurationError, match="unknown WebhookReceiver option"):
        WebhookReceiver.from_settings(FailingFirst(0), Settings.from_env(env), **{name: None})
