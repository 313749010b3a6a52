"""No verdict without evidence, no number that changes on the wire (issue 23's cases).

Each case here placed an order twice (or sent a number other than the one journaled) before:

* the settle window counted from before the trade-slot wait and the 429 pause, so a request that
  left late read as "not placed" while its order was still on its way;
* a look-up answered ``[]``, ``null``, an empty body or an object of the wrong shape read as
  "no orders";
* quantities went over the wire as floats (``1.00000000000000001`` as ``1.0``, ``1e-400`` as ``0.0``)
  and ``1e400`` failed after a symbol look-up had been sent;
* ``call()`` sent order writes that no journal recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import RetryPolicy, SafeSnapTradeClient
from aims_snaptrade import errors as e
from aims_snaptrade.operations import ORDER_WRITES
from aims_snaptrade.testing import ConnectedUser, Fault, SnapTradeEmulator
from aims_snaptrade.trading import OrderRequest

BUY: dict[str, Any] = {"action": "BUY", "symbol": "AAPL", "units": Decimal("0.25"), "confirm": True}
NOT_YET_LISTED = {"orders": []}  # a well-formed answer in which the order does not appear yet


def _orders_of(emu: SnapTradeEmulator, account: str, client_order_id: str) -> list[str]:
    with emu.state.lock:
        book = list(emu.state.get_account(account).orders)
    return [o.brokerage_order_id for o in book if o.client_order_id == client_order_id]


def _lose_answer_then_look_once(
    emu: SnapTradeEmulator, client: SafeSnapTradeClient, alice: ConnectedUser, lookup: Any
) -> tuple[Any, Any]:
    """Place an order whose answer is lost, then reconcile it once against the look-up answer ``lookup``."""
    account = alice.account_ids[0]
    emu.faults.add(Fault.lost_response(), operation="place_force_order")
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order_now(alice.user_id, account, **BUY)
    intent = lost.value.intent
    assert len(_orders_of(emu, account, intent.client_order_id)) == 1  # the order exists
    emu.faults.add(Fault.answer(lookup), operation="get_user_account_recent_orders")
    return intent, client.reconcile_order(intent)


def _working_order(client: SafeSnapTradeClient, alice: ConnectedUser) -> tuple[str, Any]:
    """An open limit order (far below the market) to cancel or replace: (account, order)."""
    account = alice.account_ids[0]
    terms = {"action": "BUY", "symbol": "AAPL", "units": 1, "order_type": "Limit", "price": 1, "confirm": True}
    return account, client.place_order_now(alice.user_id, account, **terms)


# --- the settle window starts when the request can no longer leave --------------------------------


def test_a_trade_slot_wait_before_the_send_does_not_shorten_the_settle_window(
    make_client: Callable[..., SafeSnapTradeClient], emu: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    # One order write per account per 3 s: the second order waits about 3 s for its slot, longer
    # than the 2 s settle window, and only then leaves; its answer is lost.
    client = make_client(trade_limit_per_account=1, trade_limit_window=3, order_settle_seconds=2)
    client.place_order_now(alice.user_id, alice.account_ids[0], **BUY)
    intent, verdict = _lose_answer_then_look_once(emu, client, alice, NOT_YET_LISTED)
    assert verdict.outcome == "unknown" and verdict.unknown_reason == "settling", verdict
    assert (intent.left_by - intent.sent_at).total_seconds() >= 2  # it left after the slot wait
    assert client.reconcile_order(intent).outcome == "placed"  # listed at the next look


def test_a_retry_after_pause_before_the_send_does_not_shorten_the_settle_window(
    make_client: Callable[..., SafeSnapTradeClient], emu: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    # SnapTrade answers 429 (not processed) with Retry-After: 3; the resend after the pause is
    # processed and its answer lost. The settle window (2 s) must count from after the pause.
    policy = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05, deadline=10.0)
    client = make_client(order_settle_seconds=2, retry=policy)
    emu.faults.add(Fault.rate_limited(retry_after=3), operation="place_force_order")
    emu.faults.add(Fault.lost_response(), operation="place_force_order", skip=1)
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order_now(alice.user_id, alice.account_ids[0], **BUY)
    intent = lost.value.intent
    assert emu.journal.count(operation="place_force_order") == 2
    assert len(_orders_of(emu, alice.account_ids[0], intent.client_order_id)) == 1
    emu.faults.add(Fault.answer(NOT_YET_LISTED), operation="get_user_account_recent_orders")
    verdict = client.reconcile_order(intent)
    assert verdict.outcome == "unknown" and verdict.unknown_reason == "settling", verdict
    assert client.reconcile_order(intent).outcome == "placed"


def test_left_by_is_journaled_before_the_send_and_bounds_every_wait(
    make_client: Callable[..., SafeSnapTradeClient], emu: SnapTradeEmulator, alice: ConnectedUser, intents: Any
) -> None:
    # A process killed mid-call never moves left_by: the bound journaled before sending must
    # already cover the deadline of every wait (here 10 s, twice, plus the connect timeout).
    policy = RetryPolicy(max_attempts=2, deadline=10.0)
    client = make_client(retry=policy, connect_timeout=1.0)
    journaled: list[Any] = []
    record = intents.record
    intents.record = lambda intent: journaled.append(intent) or record(intent)
    client.place_order_now(alice.user_id, alice.account_ids[0], **BUY)
    (intent,) = journaled
    assert intent.left_by is not None
    assert (intent.left_by - intent.created_at).total_seconds() == pytest.approx(2 * (10.0 + 1.0))


# --- look-up answers that prove nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    "lookup",
    [[], None, b"", {}, {"orders": "none"}, {"orders": {}}, "no orders", 0],
    ids=["empty-list", "null", "empty-body", "empty-object", "orders-a-string", "orders-an-object", "text", "zero"],
)
def test_a_look_up_in_the_wrong_shape_is_unknown_never_not_placed(
    client: SafeSnapTradeClient, emu: SnapTradeEmulator, alice: ConnectedUser, lookup: Any
) -> None:
    intent, verdict = _lose_answer_then_look_once(emu, client, alice, lookup)  # settle window: 0 s
    assert verdict.outcome == "unknown", verdict
    assert verdict.unknown_reason == "malformed_answer" and verdict.retry_at is not None
    assert client.pending_order_intents == [verdict.intent]
    again = client.reconcile_order(intent, resend=True)  # no resend on no evidence: the next look finds it
    assert again.outcome == "placed" and not again.resent
    assert len(_orders_of(emu, alice.account_ids[0], intent.client_order_id)) == 1


@pytest.mark.parametrize("detail", [None, b"", [], {}, {"brokerage_order_id": "other", "status": "CANCELED"}])
def test_a_cancellation_is_not_settled_on_a_detail_in_the_wrong_shape(
    client: SafeSnapTradeClient, emu: SnapTradeEmulator, alice: ConnectedUser, detail: Any
) -> None:
    account, working = _working_order(client, alice)
    emu.faults.add(Fault.lost_response(), operation="cancel_order")  # cancelled, answer lost
    emu.faults.add(Fault.answer(detail), operation="get_user_account_order_detail", times=2)
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.cancel_order(alice.user_id, account, working.brokerage_order_id)
    verdict = client.reconcile_order(lost.value.intent)
    assert (verdict.outcome, verdict.unknown_reason) == ("unknown", "malformed_answer"), verdict
    assert client.reconcile_order(lost.value.intent).outcome == "placed"  # the order says CANCELED


@pytest.mark.parametrize("detail", [None, b"", [], {"status": "REPLACED"}])
def test_a_replacement_is_not_settled_on_a_detail_in_the_wrong_shape(
    client: SafeSnapTradeClient, emu: SnapTradeEmulator, alice: ConnectedUser, detail: Any
) -> None:
    account, working = _working_order(client, alice)
    emu.faults.add(Fault.lost_response(), operation="replace_order")
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.replace_order(
            alice.user_id, account, working.brokerage_order_id, action="BUY", units=2, order_type="Limit",
            price=1, confirm=True,
        )  # fmt: skip
    emu.faults.add(Fault.answer(detail), operation="get_user_account_order_detail")
    verdict = client.reconcile_order(lost.value.intent)
    assert (verdict.outcome, verdict.unknown_reason) == ("unknown", "malformed_answer"), verdict
    assert client.reconcile_order(lost.value.intent).outcome == "placed"


# --- numbers the wire carries exactly, or refused before anything is sent ---------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("units", "1.00000000000000001"),  # a float carries 1.0
        ("units", "1e-400"),  # a float carries 0.0
        ("price", "1e-400"),
        ("units", "1e400"),  # a float carries inf (and the preview sent a symbol look-up first)
        ("price", "1e400"),
        ("units", "0.0000000000000000001"),  # 19 decimal places
        ("notional_value", "1234567890123456"),  # 16 significant digits
    ],
)
def test_a_number_the_wire_cannot_carry_is_refused_before_any_request(
    client: SafeSnapTradeClient, emu: SnapTradeEmulator, alice: ConnectedUser, field: str, value: str
) -> None:
    terms: dict[str, Any] = {"action": "BUY", "symbol": "AAPL", "units": Decimal(1)}
    if field == "price":
        terms.update(order_type="Limit", price=Decimal(value))
    elif field == "notional_value":
        terms.update(units=None, notional_value=Decimal(value))
    else:
        terms[field] = Decimal(value)
    emu.journal.clear()
    with pytest.raises(e.SnapTradeValidationError, match=field):
        client.preview_order(alice.user_id, alice.account_ids[0], **terms)
    with pytest.raises(e.SnapTradeValidationError, match=field):
        client.place_order_now(alice.user_id, alice.account_ids[0], confirm=True, **terms)
    assert len(emu.journal) == 0  # no symbol look-up, no impact, no order
    assert client.pending_order_intents == []


_WIRE_DECIMALS = st.builds(
    lambda digits, places: Decimal(digits).scaleb(-places),
    st.integers(min_value=1, max_value=10**15 - 1),
    st.integers(min_value=0, max_value=18),
).filter(lambda d: d < Decimal("1e15") and len(d.normalize().as_tuple().digits) <= 15)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(units=_WIRE_DECIMALS)
def test_an_accepted_quantity_reaches_the_wire_as_its_own_digits(units: Decimal) -> None:
    # What the library accepts goes out as the Decimal's own text, and reads back as the same number
    # through a float (what SnapTrade's JSON parser and the signature check read).
    from aims_snaptrade._transport import _exact_arguments, _exact_json_body

    request = OrderRequest.build("acc", action="BUY", symbol="AAPL", units=units)
    body = _exact_json_body(_exact_arguments(request.sdk_arguments()))
    assert json.loads(body, parse_float=Decimal)["units"] == units
    assert Decimal(repr(json.loads(body)["units"])) == units
    assert format(units, "f") in body.decode()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(units=st.builds(lambda n, p: Decimal(n).scaleb(-p), st.integers(1, 9999), st.integers(4, 15)))
def test_an_accepted_quantity_is_placed_as_journaled(
    client: SafeSnapTradeClient, emu: SnapTradeEmulator, alice: ConnectedUser, units: Decimal
) -> None:
    order = client.place_order_now(alice.user_id, alice.account_ids[1], action="BUY", symbol="AAPL", units=units,
                                   confirm=True)  # fmt: skip
    assert order.total_quantity == units  # signed, parsed and placed as the very number journaled


def test_a_quantity_float_cannot_carry_would_have_been_reconciled_by_quantity(
    client: SafeSnapTradeClient, emu: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    # The quantity journaled is the quantity placed, so a listing without client_order_id matches it.
    units = Decimal("0.123456789012345")
    emu.faults.add(Fault.lost_response(), operation="place_force_order")
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order_now(alice.user_id, alice.account_ids[0], action="BUY", symbol="MSFT", units=units,
                               confirm=True)  # fmt: skip
    with emu.state.lock:
        (order,) = [o for o in emu.state.get_account(alice.account_ids[0]).orders
                    if o.client_order_id == lost.value.intent.client_order_id]  # fmt: skip
        assert order.total_quantity == units
        order.client_order_id = None  # a brokerage that does not echo it
    verdict = client.reconcile_order(lost.value.intent)
    assert verdict.outcome == "placed" and verdict.order.total_quantity == units


# --- call() sends no order write that no journal records -----------------------------------------


@pytest.mark.parametrize("operation", sorted(ORDER_WRITES))
def test_call_refuses_every_order_write_naming_the_safe_path(
    client: SafeSnapTradeClient, emu: SnapTradeEmulator, alice: ConnectedUser, operation: str
) -> None:
    emu.journal.clear()
    with pytest.raises(e.SnapTradeGuardrailError) as refused:
        client.call(operation, user_id=alice.user_id, account_id=alice.account_ids[0])
    assert refused.value.operation == operation
    safe = ORDER_WRITES[operation]
    assert (safe.split("(")[0] if safe else "no journaled flow") in (refused.value.hint or "")
    assert len(emu.journal) == 0


def test_settle_window_anchor_is_the_end_of_the_call(
    client: SafeSnapTradeClient, emu: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    before = datetime.now(UTC)
    emu.faults.add(Fault.drop(), operation="place_force_order")
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order_now(alice.user_id, alice.account_ids[0], **BUY)
    intent = lost.value.intent
    assert intent.left_by is not None and intent.sent_at >= before and intent.left_by > intent.sent_at
    assert client._stores["intents"].get(intent.client_order_id).left_by == intent.left_by


@settings(max_examples=300, deadline=None)
@given(
    number=st.one_of(
        st.decimals(allow_nan=True, allow_infinity=True),
        st.builds(lambda d, e: Decimal(d).scaleb(e), st.integers(-(10**20), 10**20), st.integers(-420, 420)),
    )
)
def test_every_number_is_accepted_exactly_as_a_double_carries_it_or_refused_by_a_validation_error(
    number: Decimal,
) -> None:
    # The documented rule, computed independently of the library: a positive number below 10^15
    # with at most 15 significant digits and 18 decimal places.
    exact = number.normalize(Context(prec=2000)) if number.is_finite() else number
    digits, exponent = (len(exact.as_tuple().digits), exact.as_tuple().exponent) if number.is_finite() else (0, 0)
    allowed = number.is_finite() and 0 < number < Decimal("1e15") and digits <= 15 and -int(exponent) <= 18
    if not allowed:
        with pytest.raises(e.SnapTradeValidationError, match="price"):
            OrderRequest.build("acc", action="BUY", symbol="AAPL", order_type="Limit", units=1, price=number)
        return
    request = OrderRequest.build("acc", action="BUY", symbol="AAPL", order_type="Limit", units=1, price=number)
    assert request.price == number
    assert Decimal(repr(float(number))) == number  # what a server reads back is the number journaled
