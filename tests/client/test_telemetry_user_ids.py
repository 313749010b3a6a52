"""With ``telemetry_include_user_ids`` off (the default), no span or metric names the user or account:
not as an attribute, and not inside an error's text, status description or event, even when the
error itself names them (docs/telemetry.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from otel_helpers import SPANS, install, snapshot

from aims_snaptrade import SnapTradeConsentRequiredError, SnapTradeError
from aims_snaptrade.testing import Fault


@pytest.fixture(autouse=True)
def _otel() -> None:
    install()
    SPANS.clear()


def _texts(span: ReadableSpan) -> Iterator[str]:
    """Every piece of text a span carries to an exporter."""
    yield span.name
    yield span.status.description or ""
    for value in (span.attributes or {}).values():
        yield str(value)
    for event in span.events:
        yield event.name
        for value in (event.attributes or {}).values():
            yield str(value)


def _metric_texts() -> Iterator[str]:
    for name, attributes in snapshot():
        yield name
        for key, value in attributes:
            yield f"{key}={value}"


class Refuse:
    def has_consent(self, user_id: str, scope: str) -> bool:
        return False


def _assert_unnamed(*ids: str) -> None:
    spans = SPANS.get_finished_spans()
    assert spans, "the failing call made no span"
    for text in [t for span in spans for t in _texts(span)] + list(_metric_texts()):
        for value in ids:
            assert value not in text


def test_a_refused_call_for_a_user_names_them_nowhere_in_telemetry(make_client: Any, alice: Any) -> None:
    client = make_client(consent=Refuse())
    with pytest.raises(SnapTradeConsentRequiredError) as raised:
        client.get_positions(alice.user_id, alice.account_ids[0])
    assert alice.user_id in str(raised.value)  # the error names the user: telemetry must not repeat it
    _assert_unnamed(alice.user_id, alice.account_ids[0])


@pytest.mark.parametrize(
    "fault",
    [Fault.status(404, code="1011"), Fault.status(403, code="1141"), Fault.status(500, code="1000"), Fault.drop()],
    ids=["404", "403", "500", "drop"],
)
def test_a_failed_call_for_a_user_names_them_nowhere_in_telemetry(
    make_client: Any, emu: Any, alice: Any, fault: Any
) -> None:
    client = make_client(read_timeout=0.5)
    emu.faults.add(fault, operation="get_all_account_positions")
    with pytest.raises(SnapTradeError):
        client.get_positions(alice.user_id, alice.account_ids[0])
    _assert_unnamed(alice.user_id, alice.account_ids[0])


def test_with_the_setting_on_the_error_text_still_does_not_name_the_user(make_client: Any, alice: Any) -> None:
    """The setting allows the id attributes; an error's status and events stay the type and codes."""
    client = make_client(consent=Refuse(), telemetry_include_user_ids=True)
    with pytest.raises(SnapTradeConsentRequiredError):
        client.get_positions(alice.user_id, alice.account_ids[0])
    [span] = SPANS.get_finished_spans()
    assert span.status.description == "SnapTradeConsentRequiredError"
    assert alice.user_id not in (span.status.description or "")
    assert all(alice.user_id not in str(v) for event in span.events for v in (event.attributes or {}).values())


# The refusals whose own text names the person: the user's budget ("the local user budget of
# '<user id>'"), the account's bucket ("... account budget of '<account id>'"), missing consent.
# Each is recorded on the span twice (the attempt's event and the call's status and attributes).
REFUSALS = {
    "user budget": {"user_limit_per_minute": 1, "rate_limit_mode": "fail"},
    "account budget": {"account_limit": 1, "rate_limit_mode": "fail"},
    "consent": {"consent": Refuse()},
}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user_id=st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=12, max_size=24).map(
        lambda text: f"user-{text}"
    ),
    refusal=st.sampled_from(sorted(REFUSALS)),
)
def test_no_refusal_text_names_the_user_or_account_anywhere_in_telemetry(
    make_client: Any, emu: Any, store: Any, user_id: str, refusal: str
) -> None:
    """Whatever the ids and whichever refusal names them, with user ids off they reach no span,
    event, status or metric; the error itself names them (it is the caller's to log)."""
    user = emu.connect(user_id, brokerage="ALPACA")
    store.put(user.user_id, user.user_secret)
    client = make_client(**REFUSALS[refusal])
    account = user.account_ids[0]
    if refusal != "consent":
        client.get_positions(user.user_id, account)  # the one slot of the user's (account's) budget
    SPANS.clear()
    with pytest.raises(SnapTradeError) as raised:
        client.get_positions(user.user_id, account)
    named = account if refusal == "account budget" else user.user_id
    assert named in str(raised.value)
    _assert_unnamed(user.user_id, account)
