"""Properties of verify_webhook over generated payloads (both shapes, any text, any extra fields).

Every valid delivery verifies and parses; every single-byte change to the body or the signature,
every timestamp outside the window and every signature made with another key is refused with the
right typed error. The suite runs a bounded slice; ``nox -s webhooks`` runs 10,000 payloads per
property (``AIMS_WEBHOOK_EXAMPLES``). Each test prints how many payloads it checked.
"""

from __future__ import annotations

import json
import os
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_helpers import KEY, signed

from aims_snaptrade.errors import (
    SnapTradeWebhookError,
    SnapTradeWebhookMalformedError,
    SnapTradeWebhookSignatureError,
    SnapTradeWebhookStaleError,
)
from aims_snaptrade.webhooks import EVENT_TYPES, GenericWebhookEvent, verify_webhook

EXAMPLES = int(os.environ.get("AIMS_WEBHOOK_EXAMPLES", "60"))
NOW = 1_900_000_000.0
TOLERANCE = 300.0
# The suite's 120 s per-test timeout is for the bounded slice; the nox session's 10,000 examples
# per property take minutes on a busy machine.
pytestmark = pytest.mark.timeout(max(120, EXAMPLES // 5))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
event_types = st.sampled_from(sorted(EVENT_TYPES)) | st.text(string.ascii_uppercase + "_", min_size=1, max_size=30)


def stamp(age: float, tz: timezone) -> str:
    return datetime.fromtimestamp(NOW - age, UTC).astimezone(tz).isoformat()


@st.composite
def payloads(draw: st.DrawFn, ages: st.SearchStrategy[float] | None = None) -> dict[str, Any]:
    """A payload of either shape with an ``eventTimestamp`` inside the window (or of ``ages``)."""
    age = draw(ages if ages is not None else st.floats(-TOLERANCE + 0.01, TOLERANCE - 0.01))
    body: dict[str, Any] = {
        draw(st.sampled_from(["webhookId", "webookId"])): draw(st.uuids().map(str) | st.text(min_size=1)),
        "eventTimestamp": stamp(age, draw(offsets)),
        "userId": draw(st.text(min_size=1, max_size=30)),
        "eventType": draw(event_types),
    }
    if draw(st.booleans()):
        body.update(schemaVersion="oauth_v1", oauthClientId=draw(st.text(max_size=20)))
        body["connectionId"] = str(draw(st.uuids()))
    else:
        body.update(clientId=draw(st.text(max_size=20)), brokerageAuthorizationId=str(draw(st.uuids())))
    if body["eventType"] == "ACCOUNT_HOLDINGS_UPDATED" or draw(st.booleans()):
        body["details"] = {"success": draw(st.booleans()), "extra": draw(json_values)}
    reserved = set(body) | {"webhookId", "webookId", "details", "schemaVersion", "connectionId", "clientId"}
    extra = draw(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in reserved), json_values, max_size=4))
    return {**body, **extra}


def report(capsys: pytest.CaptureFixture[str], what: str, count: int) -> None:
    with capsys.disabled():
        print(f"\n[webhooks] {what}: {count} payloads")
    assert count >= min(EXAMPLES, 40), f"hypothesis ran only {count} examples"


def check(headers: dict[str, str], body: bytes) -> Any:
    return verify_webhook(headers, body, consumer_key=KEY, tolerance=TOLERANCE, now=lambda: NOW)


def test_every_valid_payload_verifies_and_parses(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[int] = []

    @PROPERTY
    @given(payloads())
    def prop(body: dict[str, Any]) -> None:
        headers, raw = signed(body)
        event = check(headers, raw)
        assert event.webhook_id == body.get("webhookId", body.get("webookId"))
        assert event.event_type == body["eventType"]
        assert type(event) is EVENT_TYPES.get(body["eventType"], GenericWebhookEvent)
        assert event.is_oauth == ("schemaVersion" in body)
        assert event.authorization_id == body.get("brokerageAuthorizationId", body.get("connectionId"))
        if body["eventType"] == "ACCOUNT_HOLDINGS_UPDATED":
            assert event.success is body["details"]["success"]
        # SnapTrade need not send the canonical text: any spacing and member order verifies too.
        assert check(headers, json.dumps(body, indent=1).encode()).webhook_id == event.webhook_id
        seen.append(1)

    prop()
    report(capsys, "valid payloads verified and parsed", len(seen))


def test_every_single_byte_change_of_the_body_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[int] = []

    @PROPERTY
    @given(payloads(), st.data())
    def prop(body: dict[str, Any], data: st.DataObject) -> None:
        headers, raw = signed(body)
        index = data.draw(st.integers(0, len(raw) - 1))
        byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]))
        changed = raw[:index] + bytes([byte]) + raw[index + 1 :]
        with pytest.raises((SnapTradeWebhookSignatureError, SnapTradeWebhookMalformedError)):
            check(headers, changed)
        seen.append(1)

    prop()
    report(capsys, "single-byte body changes refused", len(seen))


def test_every_single_byte_change_of_the_signature_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[int] = []

    @PROPERTY
    @given(payloads(), st.data())
    def prop(body: dict[str, Any], data: st.DataObject) -> None:
        headers, raw = signed(body)
        signature = headers["Signature"].encode()
        index = data.draw(st.integers(0, len(signature) - 1))
        byte = data.draw(st.integers(0, 255).filter(lambda b: b != signature[index]))
        changed = (signature[:index] + bytes([byte]) + signature[index + 1 :]).decode("latin-1")
        with pytest.raises(SnapTradeWebhookSignatureError) as refused:
            check({**headers, "Signature": changed}, raw)
        assert changed not in str(refused.value)
        seen.append(1)

    prop()
    report(capsys, "single-byte signature changes refused", len(seen))


def test_every_stale_timestamp_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[int] = []
    outside = st.floats(TOLERANCE + 0.01, 10 * 365 * 86400.0)

    @PROPERTY
    @given(payloads(ages=outside | outside.map(lambda a: -a)))
    def prop(body: dict[str, Any]) -> None:
        with pytest.raises(SnapTradeWebhookStaleError) as refused:
            check(*signed(body))
        assert abs(refused.value.age_seconds) > TOLERANCE
        seen.append(1)

    prop()
    report(capsys, "stale timestamps refused", len(seen))


def test_every_signature_made_with_another_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[int] = []

    @PROPERTY
    @given(payloads(), st.text(min_size=1, max_size=64).filter(lambda k: k != KEY))
    def prop(body: dict[str, Any], other_key: str) -> None:
        headers, raw = signed(body, other_key)
        with pytest.raises(SnapTradeWebhookSignatureError) as refused:
            check(headers, raw)
        text = f"{refused.value!s} {refused.value!r}"
        assert KEY not in text
        assert headers["Signature"] not in text
        seen.append(1)

    prop()
    report(capsys, "signatures made with another key refused", len(seen))


def test_refusals_are_webhook_errors_with_receiver_statuses() -> None:
    headers, raw = signed({"eventType": "USER_REGISTERED", "webhookId": "w", "eventTimestamp": stamp(0, UTC)})
    cases = [
        ({}, raw, SnapTradeWebhookSignatureError, 401),
        (headers, b"\xff", SnapTradeWebhookMalformedError, 400),
        (headers, b"[1]", SnapTradeWebhookMalformedError, 400),
        (headers, b'{"a":1,"a":1}', SnapTradeWebhookMalformedError, 400),
        (headers, b'{"a":NaN}', SnapTradeWebhookMalformedError, 400),
    ]
    for given_headers, body, kind, status in cases:
        with pytest.raises(kind) as refused:
            check(given_headers, body)
        assert isinstance(refused.value, SnapTradeWebhookError)
        assert refused.value.http_status == status


@pytest.mark.parametrize(
    ("canonical", "respelled"),
    [
        ('{"eventType":"X","name":"\\u00e9"}', '{"eventType":"X","name":"\\u00E9"}'),
        ('{"eventType":"X","n":1e+16}', '{"eventType":"X","n":1E+16}'),
        ('{"eventType":"X","n":1.5}', '{"eventType":"X","n":15e-1}'),
    ],
)
def test_value_preserving_respellings_are_refused(canonical: str, respelled: str) -> None:
    """The signature covers the value; the spelling check covers the bytes a value cannot see."""
    body = json.loads(canonical) | {"webhookId": "w", "eventTimestamp": stamp(0, UTC)}
    headers, raw = signed(body)
    assert json.loads(raw.replace(canonical[1:-1].encode(), respelled[1:-1].encode())) == body
    check(headers, raw)
    with pytest.raises(SnapTradeWebhookSignatureError, match="spells a value differently"):
        check(headers, raw.replace(canonical[1:-1].encode(), respelled[1:-1].encode()))


def test_a_signature_differing_only_in_letter_case_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Base64 is case-sensitive: the comparison is exact, so a case-folded signature is another signature."""
    seen: list[int] = []

    @PROPERTY
    @given(payloads(), st.data())
    def prop(body: dict[str, Any], data: st.DataObject) -> None:
        headers, raw = signed(body)
        signature = headers["Signature"]
        letters = [i for i, c in enumerate(signature) if c.isalpha()]
        index = data.draw(st.sampled_from(letters))
        flipped = signature[:index] + signature[index].swapcase() + signature[index + 1 :]
        for changed in (flipped, signature.lower(), signature.upper()):
            with pytest.raises(SnapTradeWebhookSignatureError, match="does not match"):
                check({**headers, "Signature": changed}, raw)
        seen.append(1)

    prop()
    report(capsys, "case-changed signatures refused", len(seen))


SEVERAL = r"^The webhook has several Signature headers\.(\s|$)"


def test_several_signature_headers_are_refused_even_when_the_first_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    """One ``Signature`` header, whatever its name's case: two are ambiguous (which did the proxy check?)."""
    seen: list[int] = []
    names = st.sampled_from(["Signature", "signature", "SIGNATURE", "sIgNaTuRe"])

    @PROPERTY
    @given(payloads(), names, names, st.sampled_from(["same", "forged", "empty"]), st.booleans())
    def prop(body: dict[str, Any], first: str, second: str, other: str, raw_pairs: bool) -> None:
        headers, raw = signed(body)
        valid = headers["Signature"]
        extra = {"same": valid, "forged": signed(body, KEY + "-other")[0]["Signature"], "empty": ""}[other]
        pairs: list[tuple[str | bytes, str | bytes]] = [("Content-Type", "application/json"), (first, valid)]
        pairs.append((second, extra))
        if raw_pairs:  # ASGI's raw headers: bytes
            pairs = [
                (k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v) for k, v in pairs
            ]
            assert check([pairs[0], pairs[1]], raw).webhook_id  # one of them alone verifies
        else:
            assert check(dict([pairs[0], pairs[1]]), raw).webhook_id  # type: ignore[arg-type]
        with pytest.raises(SnapTradeWebhookSignatureError, match=SEVERAL):
            check(pairs, raw)
        if first != second and not raw_pairs:  # a mapping can hold both spellings of the name
            with pytest.raises(SnapTradeWebhookSignatureError, match=SEVERAL):
                check({"Content-Type": "application/json", first: valid, second: extra}, raw)
        seen.append(1)

    prop()
    report(capsys, "several Signature headers refused", len(seen))
