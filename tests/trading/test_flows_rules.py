"""The order flows' promises, one at a time (docs/trading.md): what they refuse, journal and send."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade import errors as e
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator
from aims_snaptrade.trading import MemoryOrderIntentStore

WRITES = ("place_order", "place_force_order", "replace_order", "cancel_order")
ORDER: dict[str, Any] = {"action": "BUY", "symbol": "AAPL", "units": Decimal("0.1")}

# Anything but True itself: truthy values, True's equals (1, 1.0), and words that read as yes.
_NOT_TRUE = st.one_of(
    st.sampled_from([1, 1.0, Decimal(1), "yes", "true", "True", "1", [True], (True,), {"confirm": True}, False, 0]),
    st.none(),
    st.text(min_size=1, max_size=8),
    st.integers().filter(lambda n: n != 0),
)


def _sent(emu: SnapTradeEmulator) -> int:
    return sum(emu.journal.count(operation=op) for op in WRITES)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(confirm=_NOT_TRUE)
def test_only_confirm_true_places_or_replaces_an_order(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    confirm: Any,
) -> None:
    account = alice.account_ids[0]
    before = _sent(emu)
    with pytest.raises(e.SnapTradeGuardrailError, match="confirm=True") as refused:
        client.place_order_now(alice.user_id, account, confirm=confirm, **ORDER)
    assert refused.value.operation == "place_force_order"
    with pytest.raises(e.SnapTradeGuardrailError, match="confirm=True") as refused:
        client.replace_order(alice.user_id, account, "order-1", action="BUY", units=1, confirm=confirm)
    assert refused.value.operation == "replace_order"
    assert _sent(emu) == before
    assert intents.pending() == [] and intents.claimed_order_ids(account) == []


# --- every local refusal is audited once, naming the operation, the user and the account -----------------


@pytest.fixture
def audited(make_client: Any, tmp_path: Any) -> Any:
    from aims_snaptrade.compliance import AuditKey, SQLiteAuditTrail

    trail = SQLiteAuditTrail(tmp_path / "audit.db", AuditKey("audit-key-for-trading-tests-0123456789"))
    yield make_client(audit=trail, confirmation_key="c" * 32, max_order_notional=Decimal(1000)), trail
    trail.close()


def test_each_refusal_of_the_trading_flows_is_audited_with_its_operation_and_subject(
    audited: Any, make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # docs/compliance.md: the trading flows' own checks (confirm, confirmation token, notional cap)
    # are each one "refused" record, attempts 0, naming the user and the account.
    import time
    from datetime import timedelta

    client, trail = audited
    account = alice.account_ids[0]
    big = {"action": "BUY", "symbol": "AAPL", "units": Decimal(100)}  # about 22,850 at market
    uncapped = make_client(confirmation_key="c" * 32, order_preview_ttl=0.2)
    small = uncapped.preview_order(alice.user_id, account, **ORDER)
    costly = make_client(confirmation_key="c" * 32).preview_order(
        alice.user_id, account, action="BUY", symbol="AAPL", units=Decimal(10)
    )
    time.sleep(0.25)  # `small` has expired
    fresh = client.preview_order(alice.user_id, account, **ORDER)
    tampered = fresh.model_copy(update={"expires_at": fresh.expires_at + timedelta(seconds=1)})
    refusals: list[tuple[Any, type[e.SnapTradeError], str]] = [
        (lambda: client.place_order_now(alice.user_id, account, confirm="yes", **ORDER),
         e.SnapTradeGuardrailError, "place_force_order"),
        (lambda: client.replace_order(alice.user_id, account, "order-1", action="BUY", units=1, confirm=1),
         e.SnapTradeGuardrailError, "replace_order"),
        (lambda: client.place_order(tampered, confirmation=fresh.confirmation),
         e.SnapTradeConfirmationError, "place_order"),
        (lambda: client.place_order(small, confirmation=small.confirmation),
         e.SnapTradeConfirmationError, "place_order"),
        (lambda: client.preview_order(alice.user_id, account, **big), e.SnapTradeOrderLimitError, "get_order_impact"),
        (lambda: client.place_order(costly, confirmation=costly.confirmation),
         e.SnapTradeOrderLimitError, "place_order"),
        (lambda: client.place_order_now(alice.user_id, account, confirm=True, **big),
         e.SnapTradeOrderLimitError, "place_force_order"),
        (lambda: client.replace_order(alice.user_id, account, "order-1", action="BUY", units=100, order_type="Limit",
                                      price=Decimal(50), confirm=True),
         e.SnapTradeOrderLimitError, "replace_order"),
    ]  # fmt: skip

    def refused_records() -> list[Any]:
        return [r for r in trail.tail(1000) if r.kind == "refused"]

    before = len(refused_records())
    for attempt, kind, operation in refusals:
        with pytest.raises(kind) as refused:
            attempt()
        assert refused.value.operation == operation, refused.value
        records = refused_records()[before:]
        assert len(records) == 1, (operation, records)
        (record,) = records
        assert (record.kind, record.action, record.attempts) == ("refused", operation, 0)
        assert (record.user_id, record.account_id, record.outcome) == (alice.user_id, account, kind.__name__)
        before += 1
    assert _sent(emu) == 0 and intents.pending() == []
    assert trail.verify().ok


# --- a confirmed preview is journaled with the very terms it previewed ---------------------------------


_TERMS = st.one_of(
    st.fixed_dictionaries({"order_type": st.just("Market"), "units": st.sampled_from([Decimal("0.5"), Decimal(2)])}),
    st.fixed_dictionaries(
        {"order_type": st.just("Limit"), "units": st.just(Decimal(1)), "price": st.sampled_from([Decimal("150.25")])}
    ),
    st.fixed_dictionaries(
        {
            "order_type": st.just("StopLimit"),
            "units": st.just(Decimal(1)),
            "price": st.just(Decimal(240)),
            "stop": st.just(Decimal("239.5")),
        }
    ),
    st.fixed_dictionaries({"order_type": st.just("Market"), "notional_value": st.just(Decimal(50))}),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(terms=_TERMS, time_in_force=st.sampled_from(["Day", "GTC"]), action=st.sampled_from(["BUY", "SELL"]))
def test_a_confirmed_preview_is_journaled_with_the_terms_it_previewed(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    terms: dict[str, Any],
    time_in_force: str,
    action: str,
) -> None:
    # Reconciliation matches a checked order (no client_order_id on the wire) by the journaled
    # terms: they must be the preview's, every one.
    from aims_snaptrade.testing import Fault

    account = alice.account_ids[0]
    preview = client.preview_order(alice.user_id, account, action=action, symbol="AAPL",
                                   time_in_force=time_in_force, **terms)  # fmt: skip
    emu.faults.add(Fault.lost_response(), operation="place_order")
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order(preview, confirmation=preview.confirmation)
    intent = intents.get(preview.client_order_id)
    assert lost.value.intent == intent
    fields = ("user_id", "account_id", "trade_id", "client_order_id", "action", "symbol", "universal_symbol_id",
              "order_type", "time_in_force", "units", "notional_value", "price", "stop")  # fmt: skip
    assert {f: getattr(intent, f) for f in fields} == {f: getattr(preview, f) for f in fields}
    assert (intent.kind, intent.status, intent.attempts) == ("checked", "pending", 1)
    assert intent.universal_symbol_id and intent.trade_id
    verdict = client.reconcile_order(intent)
    assert verdict.outcome == "placed" and verdict.order.brokerage_order_id, verdict


# --- what a preview reports, from SnapTrade's impact answer -----------------------------------------------


def _impact(account: str, **trade: Any) -> dict[str, Any]:
    """An impact answer (``ManualTradeAndImpact``) for ``account``: another account's impact first."""
    return {
        "trade": {
            "id": "trade-1",
            "account": account,
            "order_type": "Market",
            "time_in_force": "Day",
            "symbol": {"universal_symbol_id": "u-aapl-2", "symbol": "AAPL.X", "currency": {"code": "CAD"}},
            "action": "BUY",
            "units": 3,
            "price": 10.5,
            **trade,
        },
        "trade_impacts": [
            {"account": "someone-else", "remaining_cash": 1, "estimated_commission": 9, "forex_fees": 9},
            {"account": account, "remaining_cash": 968.5, "estimated_commission": 1.25, "forex_fees": 0.5},
        ],
    }


def test_a_preview_reports_the_impact_on_the_previewed_account(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    from aims_snaptrade.testing import Fault

    account = alice.account_ids[0]
    emu.faults.add(Fault.answer(_impact(account)), operation="get_order_impact")
    preview = client.preview_order(alice.user_id, account, action="BUY", symbol="AAPL", units=Decimal(2))
    assert (preview.trade_id, preview.symbol, preview.universal_symbol_id) == ("trade-1", "AAPL.X", "u-aapl-2")
    assert (preview.units, preview.estimated_price, preview.estimated_cost) == (Decimal(3), Decimal("10.5"),
                                                                               Decimal("31.5"))  # fmt: skip
    assert (preview.estimated_fees, preview.buying_power_after, preview.currency) == (
        Decimal("1.75"),
        Decimal("968.5"),
        "CAD",
    )
    # Fields the answer leaves out are the request's own; an impact for another account only is used
    # when no impact names this one; a fee left out counts as none.
    bare = _impact(account, units=None, symbol=None, price=None)
    bare["trade_impacts"] = [{"account": "someone-else", "remaining_cash": 5, "estimated_commission": 2}]
    emu.faults.add(Fault.answer(bare), operation="get_order_impact")
    preview = client.preview_order(alice.user_id, account, action="BUY", symbol="AAPL", units=Decimal(2))
    assert (preview.units, preview.symbol, preview.estimated_price, preview.estimated_cost) == (
        Decimal(2),
        "AAPL",
        None,
        None,
    )
    assert preview.universal_symbol_id  # the one looked up by ticker before the impact check
    assert (preview.estimated_fees, preview.buying_power_after, preview.currency) == (Decimal(2), Decimal(5), None)
    none = _impact(account)
    none["trade_impacts"] = []
    emu.faults.add(Fault.answer(none), operation="get_order_impact")
    preview = client.preview_order(alice.user_id, account, action="BUY", symbol="AAPL", units=Decimal(2))
    assert (preview.estimated_fees, preview.buying_power_after) == (Decimal(0), None)


@pytest.mark.parametrize("trade_id", [None, "", 7])
def test_an_impact_without_a_trade_id_is_an_error_naming_the_request(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, trade_id: Any
) -> None:
    from aims_snaptrade.testing import Fault

    emu.faults.add(Fault.answer(_impact(alice.account_ids[0], id=trade_id)), operation="get_order_impact")
    with pytest.raises(e.SnapTradeError) as failed:
        client.preview_order(alice.user_id, alice.account_ids[0], action="BUY", symbol="AAPL", units=Decimal(1))
    assert failed.value.operation == "get_order_impact"
    assert failed.value.message == "SnapTrade's order impact came back without a trade id."
    assert failed.value.request_id == emu.journal.last(operation="get_order_impact").request_id


# --- the journal's left_by is bounded by the call's own deadline -------------------------------------------


@pytest.mark.parametrize(
    ("policy_deadline", "call_deadline", "deadline"),
    [(None, None, 120.0), (None, 600.0, 600.0), (10.0, 600.0, 10.0), (300.0, None, 300.0),
     (300.0, 45.0, 45.0)],
)  # fmt: skip
def test_left_by_is_twice_the_calls_deadline_plus_the_connect_timeout(
    make_client: Any,
    alice: ConnectedUser,
    intents: MemoryOrderIntentStore,
    policy_deadline: float | None,
    call_deadline: float | None,
    deadline: float,
) -> None:
    # docs/trading.md: an order write's deadline is the call's CallOptions.deadline, else the retry
    # policy's, else 120 s (the earlier of the two when both are set); it bounds every wait before
    # the send, so left_by is journaled as twice that deadline plus the connect timeout. A longer
    # deadline than 120 s is a longer possible wait: the bound must not be cut to 120 s.
    from aims_snaptrade import CallOptions, RetryPolicy

    client = make_client(retry=RetryPolicy(max_attempts=1, deadline=policy_deadline), connect_timeout=1.5)
    options = CallOptions(deadline=call_deadline)
    journaled: list[Any] = []
    record = intents.record
    intents.record = lambda intent: journaled.append(intent) or record(intent)  # type: ignore[method-assign]
    account = alice.account_ids[0]
    working = client.place_order_now(alice.user_id, account, confirm=True, options=options, action="BUY",
                                     symbol="AAPL", units=1, order_type="Limit", price=1)  # fmt: skip
    preview = client.preview_order(alice.user_id, account, options=options, **ORDER)
    client.place_order(preview, confirmation=preview.confirmation, options=options)
    new = client.replace_order(alice.user_id, account, working.brokerage_order_id, action="BUY", units=2,
                               order_type="Limit", price=1, confirm=True, options=options)  # fmt: skip
    client.cancel_order(alice.user_id, account, new.brokerage_order_id, options=options)
    assert [i.kind for i in journaled] == ["force", "checked", "replace", "cancel"]
    for intent in journaled:
        assert intent.left_by is not None
        assert (intent.left_by - intent.sent_at).total_seconds() == pytest.approx(2 * (deadline + 1.5)), intent.kind
