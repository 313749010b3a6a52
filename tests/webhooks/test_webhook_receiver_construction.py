"""What ``WebhookReceiver(...)`` refuses, what it keys claims by, and which store it owns."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from webhook_helpers import KEY, payload, signed

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeWebhookDedupeStoreError
from aims_snaptrade.webhooks import MemoryWebhookDedupeStore, SQLiteWebhookDedupeStore, WebhookEvent, WebhookReceiver
from aims_snaptrade.webhooks.verify import MAX_AHEAD_SECONDS


def ignore(event: WebhookEvent) -> None:
    pass


def refusal(**options: Any) -> str:
    options.setdefault("consumer_key", KEY)
    handler = options.pop("handler", ignore)
    with pytest.raises(SnapTradeConfigurationError) as refused:
        WebhookReceiver(handler, **options)
    return str(refused.value.message)


def test_handler_and_hook_must_be_callable() -> None:
    assert refusal(handler="not callable") == "WebhookReceiver needs a callable handler(event)."
    assert refusal(on_verified=42) == "on_verified must be a callable taking the event."


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"consumer_key": ""}, "WebhookReceiver needs the consumer key as a non-empty string."),
        ({"previous_consumer_keys": "old"}, "WebhookReceiver: previous_consumer_keys must be a list of keys"),
        ({"previous_consumer_keys": [""]}, "WebhookReceiver: every previous consumer key must be a non-empty string."),
    ],
)
def test_key_refusals_name_the_receiver(options: dict[str, Any], message: str) -> None:
    assert refusal(**options).startswith(message)


@pytest.mark.parametrize("name", ["tolerance", "lease_seconds", "retention_seconds"])
@pytest.mark.parametrize("value", [0, 0.0, -1.0, True, False, "60", None, float("nan")])
def test_durations_must_be_positive_seconds(name: str, value: Any) -> None:
    assert refusal(**{name: value}) == f"{name} must be positive seconds, got {value!r}."


@settings(max_examples=30, deadline=None, database=None)
@given(tolerance=st.floats(1, 7 * 24 * 3600), short=st.floats(0.5, 1_000))
def test_a_retention_shorter_than_the_accepted_span_names_both_and_the_fix(tolerance: float, short: float) -> None:
    span = tolerance + min(tolerance, MAX_AHEAD_SECONDS)
    retention = max(span - short, 0.001)
    message = refusal(tolerance=tolerance, retention_seconds=retention)
    assert message == (
        f"retention_seconds ({retention:g}) is shorter than the span the replay window accepts a payload "
        f"({span:g} s: tolerance plus the clock skew allowed ahead): a replay would be processed twice. "
        "Raise retention_seconds or lower tolerance."
    )


@pytest.mark.parametrize("id_key", ["", 5, b"bytes-key"])
def test_an_id_key_must_be_a_non_empty_string(id_key: Any) -> None:
    assert refusal(id_key=id_key) == "id_key must be a non-empty string (the audit key) or None."


def expected_claim_key(secret: str, webhook_id: str) -> str:
    """The documented derivation (aims_snaptrade._ids.keyed_ids), written out independently."""
    derived = hmac.new(secret.encode(), b"aims-snaptrade webhook claim ids v1", hashlib.sha256).digest()
    return "h-" + hmac.new(derived, webhook_id.encode(), hashlib.sha256).hexdigest()[:32]


def test_claim_keys_are_stable_across_releases() -> None:
    """Replicas of two releases share claims during a rolling upgrade only if both derive the same key."""
    webhook_id = "5b4c1b46-1c47-4e37-a6e8-2a4a6a8a4a11"
    audited = WebhookReceiver(ignore, consumer_key="golden-consumer-key", id_key="golden-audit-key")
    plain = WebhookReceiver(ignore, consumer_key="golden-consumer-key", previous_consumer_keys=["older-key"])
    assert audited.claim_key(webhook_id) == "h-0dcd657495230c87d5c08bca032bca4c"
    assert plain.claim_key(webhook_id) == "h-668928b7dfb0e987fd74e655d9cbf016"
    assert audited.claim_key(webhook_id) == expected_claim_key("golden-audit-key", webhook_id)
    assert plain.claim_key(webhook_id) == expected_claim_key("golden-consumer-key", webhook_id)


def test_the_receiver_closes_only_a_store_it_opened(tmp_path: Path) -> None:
    given = SQLiteWebhookDedupeStore(tmp_path / "given.db")
    with WebhookReceiver(ignore, consumer_key=KEY, dedupe=given) as receiver:
        assert receiver.handle(*signed(payload())).outcome == "processed"
    assert given.claim("after", "t", 60) == "claimed"  # still open: the caller owns it
    given.close()

    with WebhookReceiver(ignore, consumer_key=KEY, dedupe=f"sqlite:///{tmp_path}/owned.db") as receiver:
        owned = receiver.dedupe
        assert receiver.handle(*signed(payload())).outcome == "processed"
    with pytest.raises(SnapTradeWebhookDedupeStoreError, match="is closed"):
        owned.claim("after", "t", 60)
    receiver.close()  # idempotent

    default = WebhookReceiver(ignore, consumer_key=KEY)
    assert isinstance(default.dedupe, MemoryWebhookDedupeStore)
    assert repr(default) == "WebhookReceiver(dedupe=MemoryWebhookDedupeStore(0 entries), tolerance=21600)"
    default.close()
