"""verify_webhook's edges (docs/webhooks.md, "Verification"): the replay window at its bounds, the
body's size and types, header forms, what each refusal says, and what gets registered for redaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from webhook_helpers import KEY, signed

from aims_snaptrade.errors import (
    SnapTradeConfigurationError,
    SnapTradeWebhookMalformedError,
    SnapTradeWebhookSignatureError,
    SnapTradeWebhookStaleError,
)
from aims_snaptrade.redaction import redact
from aims_snaptrade.webhooks import canonical_json, sign_webhook, verify_webhook
from aims_snaptrade.webhooks.verify import DEFAULT_TOLERANCE_SECONDS, MAX_AHEAD_SECONDS

NOW = 1_900_000_000.0
PROPERTY = settings(max_examples=40, deadline=None, database=None)


def body_at(when: float | str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"webhookId": "w-1", "eventType": "USER_REGISTERED", "userId": "alice", **extra}
    if when is not None:
        body["eventTimestamp"] = when if isinstance(when, str) else datetime.fromtimestamp(when, UTC).isoformat()
    return body


def check(body: dict[str, Any] | bytes, tolerance: float = DEFAULT_TOLERANCE_SECONDS, headers: Any = None) -> Any:
    if isinstance(body, dict):
        given_headers, raw = signed(body)
    else:
        given_headers, raw = {}, body
    return verify_webhook(
        given_headers if headers is None else headers, raw, consumer_key=KEY, tolerance=tolerance, now=lambda: NOW
    )


# --- the replay window -----------------------------------------------------------------------------


@PROPERTY
@given(tolerance=st.sampled_from([0.5, 1.0, 60.0, 299.0, 300.0, 301.0, 3600.0, DEFAULT_TOLERANCE_SECONDS]))
def test_the_window_includes_its_bounds_and_nothing_beyond(tolerance: float) -> None:
    ahead = min(tolerance, MAX_AHEAD_SECONDS)
    for age in (tolerance, tolerance * 0.5, 0.0, -ahead * 0.5, -ahead):
        assert check(body_at(NOW - age), tolerance).webhook_id == "w-1"
    for age, direction, limit in ((tolerance + 0.4, "old", tolerance), (-ahead - 0.4, "ahead of this clock", ahead)):
        with pytest.raises(SnapTradeWebhookStaleError) as stale:
            check(body_at(NOW - age), tolerance)
        assert stale.value.age_seconds == pytest.approx(age)
        assert stale.value.message == (
            f"The webhook event is {abs(age):.0f} s {direction}, outside the {limit:g} s replay window."
        )
        assert stale.value.http_status == 401


def test_any_utc_offset_is_the_same_instant() -> None:
    for minutes in (-720, -1, 0, 330, 840):
        stamp = datetime.fromtimestamp(NOW - 30, UTC).astimezone(timezone(timedelta(minutes=minutes))).isoformat()
        assert check(body_at(stamp), 60).webhook_id == "w-1"
        late = datetime.fromtimestamp(NOW - 90, UTC).astimezone(timezone(timedelta(minutes=minutes))).isoformat()
        with pytest.raises(SnapTradeWebhookStaleError):
            check(body_at(late), 60)


@pytest.mark.parametrize(
    ("stamp", "message"),
    [
        (None, "The webhook payload has no eventTimestamp string."),
        (1_900_000_000, "The webhook payload has no eventTimestamp string."),
        ("yesterday", "The webhook eventTimestamp is not an ISO 8601 time."),
        ("2030-03-17T17:46:40", "The webhook eventTimestamp has no UTC offset."),
    ],
)
def test_an_event_time_that_is_not_an_aware_iso_time_is_malformed(stamp: Any, message: str) -> None:
    body = body_at(None) if stamp is None else body_at(None, eventTimestamp=stamp)
    with pytest.raises(SnapTradeWebhookMalformedError) as malformed:
        check(body)
    assert malformed.value.message == message
    assert malformed.value.http_status == 400


@pytest.mark.parametrize("tolerance", [0, -1.0, True, "60", None])
def test_tolerance_must_be_positive_seconds(tolerance: Any) -> None:
    with pytest.raises(SnapTradeConfigurationError) as refused:
        check(body_at(NOW), tolerance)
    assert refused.value.message == f"tolerance must be positive seconds, got {tolerance!r}."


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"consumer_key": ""}, "verify_webhook needs the consumer key as a non-empty string."),
        ({"consumer_key": b"k"}, "verify_webhook needs the consumer key as a non-empty string."),
        (
            {"consumer_key": KEY, "previous_consumer_keys": "old"},
            "verify_webhook: previous_consumer_keys must be a list of keys (not one string), got str.",
        ),
        (
            {"consumer_key": KEY, "previous_consumer_keys": 5},
            "verify_webhook: previous_consumer_keys must be a list of keys (not one string), got int.",
        ),
        (
            {"consumer_key": KEY, "previous_consumer_keys": ["ok-key", None]},
            "verify_webhook: every previous consumer key must be a non-empty string.",
        ),
    ],
)
def test_bad_keys_are_configuration_errors(keys: dict[str, Any], message: str) -> None:
    headers, raw = signed(body_at(NOW))
    with pytest.raises(SnapTradeConfigurationError) as refused:
        verify_webhook(headers, raw, now=lambda: NOW, **keys)
    assert refused.value.message == message


def test_every_key_is_registered_for_redaction_and_a_repeated_previous_key_is_harmless() -> None:
    old, older = "previous-key-" + "q" * 20, "oldest-key-" + "z" * 20
    body = body_at(NOW)
    for key in (KEY, old, older):
        headers, raw = signed(body, key)
        event = verify_webhook(
            headers, raw, consumer_key=KEY, previous_consumer_keys=[old, older, old, KEY], now=lambda: NOW
        )
        assert event.webhook_id == "w-1"
    for key in (KEY, old, older):
        assert key not in redact(f"a log line quoting {key} by mistake")


# --- the body --------------------------------------------------------------------------------------


def test_bodies_up_to_one_mebibyte_are_read_and_larger_ones_refused_unread() -> None:
    body = body_at(NOW, padding="")
    overhead = len(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    body["padding"] = "x" * ((1 << 20) - overhead)
    headers, raw = signed(body)
    assert len(raw) == 1 << 20
    assert check(raw, headers=headers).webhook_id == "w-1"
    with pytest.raises(SnapTradeWebhookMalformedError) as large:
        check(raw + b" ", headers=headers)
    assert large.value.message == "The webhook body is larger than 1048576 bytes."


def test_bytes_like_and_text_bodies_verify_alike() -> None:
    headers, raw = signed(body_at(NOW, name="Zoë"))
    for form in (raw, bytearray(raw), memoryview(raw), raw.decode()):
        assert check(form, headers=headers).webhook_id == "w-1"  # type: ignore[arg-type]
    with pytest.raises(SnapTradeWebhookMalformedError) as wrong:
        check(12, headers=headers)  # type: ignore[arg-type]
    assert wrong.value.message == "The webhook body must be bytes or str, got int."


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a":"\xe9"}', "The webhook body is not UTF-8 (byte 6)."),
        (b'{"a":1,}', "The webhook body is not a JSON payload: Expecting property name enclosed in double quotes: "),
        (b'{"a":1,"a":2}', "The webhook body is not a JSON payload: an object repeats a key."),
        (b'{"a":{"b":1,"b":1}}', "The webhook body is not a JSON payload: an object repeats a key."),
        (b'{"a":NaN}', "The webhook body is not a JSON payload: invalid JSON."),
        (b'{"a":-Infinity}', "The webhook body is not a JSON payload: invalid JSON."),
        (b"[" * 100_000 + b"]" * 100_000, "The webhook body is not a JSON payload: invalid JSON."),
        (b'"text"', "The webhook body must be a JSON object."),
        (b"[]", "The webhook body must be a JSON object."),
    ],
)
def test_what_is_not_a_json_object_is_malformed_and_says_why(raw: bytes, message: str) -> None:
    with pytest.raises(SnapTradeWebhookMalformedError) as malformed:
        check(raw, headers={"Signature": "anything"})
    assert malformed.value.message.startswith(message)
    assert malformed.value.http_status == 400


def test_a_body_in_utf8_or_in_escapes_verifies_alike() -> None:
    body = body_at(NOW, name="Zoë 😀")
    headers, escaped = signed(body)
    utf8 = json.dumps(body, ensure_ascii=False).encode()
    assert b"\\u00eb" in escaped and "ë".encode() in utf8
    for raw in (escaped, utf8):
        assert check(raw, headers=headers).webhook_id == "w-1"


# --- the header --------------------------------------------------------------------------------------


def test_the_signature_header_is_found_in_any_form_and_trimmed() -> None:
    body = body_at(NOW)
    headers, raw = signed(body)
    signature = headers["Signature"]
    forms: list[Any] = [
        {"signature": signature},
        {"SIGNATURE": f"  {signature}\t"},
        [(b"content-type", b"application/json"), (b"signature", signature.encode())],
        [("Signature", signature.encode("latin-1"))],
        [(b"Signature", signature)],
    ]
    for form in forms:
        assert check(raw, headers=form).webhook_id == "w-1"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "The webhook has no Signature header."),
        ({"Signature": ""}, "The webhook has no Signature header."),
        ({"Signature": " \t "}, "The webhook has no Signature header."),
        ({"X-Signature": "abc"}, "The webhook has no Signature header."),
        ([(b"signature", b"\xe9\xff")], "The webhook signature does not match its payload."),
        ({"Signature": "é😀"}, "The webhook signature does not match its payload."),
        ({"Signature": "abc\ud800"}, "The webhook signature does not match its payload."),  # a lone surrogate
    ],
)
def test_a_missing_or_undecodable_signature_is_refused_not_crashed_on(headers: Any, message: str) -> None:
    with pytest.raises(SnapTradeWebhookSignatureError) as refused:
        check(signed(body_at(NOW))[1], headers=headers)
    assert refused.value.message == message


def test_a_genuine_signature_is_masked_in_logs_and_a_forged_one_is_not_registered() -> None:
    body = body_at(NOW)
    headers, raw = signed(body)
    forged = signed(body, "someone-elses-key")[0]["Signature"]
    with pytest.raises(SnapTradeWebhookSignatureError):
        check(raw, headers={"Signature": forged})
    assert forged in redact(f"got {forged}")  # a flood of forgeries cannot evict genuine entries
    check(raw, headers={"Signature": f" {headers['Signature']} "})
    assert headers["Signature"] not in redact(f"got {headers['Signature']}")


def test_a_valid_signature_over_a_respelled_body_is_refused_after_the_signature_check() -> None:
    body = body_at(NOW, n=1.5)
    headers, raw = signed(body)
    respelled = raw.replace(b"1.5", b"15e-1")
    with pytest.raises(SnapTradeWebhookSignatureError) as refused:
        check(respelled, headers=headers)
    assert refused.value.message == (
        "The webhook body spells a value differently from what was signed (escapes, number form or keys)."
    )
    assert headers["Signature"] not in redact(headers["Signature"])  # the signature itself was genuine


# --- signing -------------------------------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_ascii_and_refuses_non_json_numbers() -> None:
    assert canonical_json({"b": 1, "a": ["é", 1e16, None]}) == '{"a":["\\u00e9",1e+16,null],"b":1}'
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="not JSON compliant"):
            canonical_json({"a": bad})
    assert sign_webhook({"b": 1, "a": 2}, "k") == sign_webhook({"a": 2, "b": 1}, "k")
    assert sign_webhook({"a": 1}, "k") == "w6kv+eJ0zczieljBWnjsbcu9vQA4qH56EbrvICj9i/8="


def test_the_keys_stay_masked_however_many_user_secrets_are_registered_after_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys are registered as keys (never evicted), not as user secrets (evicted oldest first)."""
    from aims_snaptrade import _masking
    from aims_snaptrade.redaction import isolated_registry, register_secret

    monkeypatch.setitem(_masking._LIMITS, "secret", 3)  # the registry's bound on user secrets, made small
    old = "previous-key-" + "r" * 20
    headers, raw = signed(body_at(NOW))
    # A registry of its own: a value another test registered (in any order) would stay masked here.
    with isolated_registry():
        verify_webhook(headers, raw, consumer_key=KEY, previous_consumer_keys=[old], now=lambda: NOW)
        for n in range(10):
            register_secret(f"user-secret-{n:02d}-" + "s" * 16)
        newest, oldest = "user-secret-09-" + "s" * 16, "user-secret-00-" + "s" * 16
        assert newest not in redact(f"a log line quoting {newest}")  # the newest is masked...
        assert oldest in redact(f"a log line quoting {oldest}")  # ...the oldest was evicted
        for key in (KEY, old):
            assert key not in redact(f"a log line quoting {key}")
