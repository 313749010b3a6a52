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
    assert refused.value.message == "place_order_now places an order without a preview and needs confirm=True."
    with pytest.raises(e.SnapTradeGuardrailError, match="confirm=True") as refused:
        client.replace_order(alice.user_id, account, "order-1", action="BUY", units=1, confirm=confirm)
    assert refused.value.operation == "replace_order"
    assert refused.value.message == "replace_order changes a live order and needs confirm=True."
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
    assert _sent(emu) == 0 and intents.export_user(alice.user_id) == []
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
    # The preview carries the terms asked for (and is what the account owner confirms).
    asked = {"order_type": "Market", "units": None, "notional_value": None, "price": None, "stop": None, **terms}
    if "notional_value" in terms:
        del asked["units"]  # SnapTrade's impact says how many units the value buys
    assert {k: getattr(preview, k) for k in asked} == asked
    assert (preview.action, preview.time_in_force) == (action, time_in_force)
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


# --- the call's options reach every request of a flow ------------------------------------------------------


def test_the_calls_options_reach_every_read_of_a_flow(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # The client retries nothing; the call's own retry policy retries each read once after a 503.
    # A read sent without the call's options would fail the flow.
    from aims_snaptrade import CallOptions, RetryPolicy
    from aims_snaptrade.testing import Fault

    client = make_client(max_order_notional=Decimal(10_000))
    options = CallOptions(retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02, deadline=10.0))
    account = alice.account_ids[0]

    def flaky(*operations: str) -> None:
        for operation in operations:
            emu.faults.add(Fault.status(503), operation=operation, times=1)

    flaky("get_symbols_by_ticker", "get_order_impact")
    preview = client.preview_order(alice.user_id, account, options=options, **ORDER)
    assert client.place_order(preview, confirmation=preview.confirmation, options=options).status == "EXECUTED"
    flaky("get_user_account_quotes")  # the last price, to check the notional cap
    assert client.place_order_now(alice.user_id, account, confirm=True, options=options, **ORDER).status
    working = client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1,
                                     order_type="Limit", price=1)  # fmt: skip
    flaky("get_user_account_order_detail")  # the order to replace
    new = client.replace_order(alice.user_id, account, working.brokerage_order_id, action="BUY", units=2,
                               order_type="Limit", price=1, confirm=True, options=options)  # fmt: skip
    flaky("get_user_account_order_detail")  # the cancelled order, as the brokerage reports it
    assert client.cancel_order(alice.user_id, account, new.brokerage_order_id, options=options).status == "CANCELED"
    # A lost cancellation is looked up at once, with the call's options too.
    other = client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1,
                                   order_type="Limit", price=1)  # fmt: skip
    emu.faults.add(Fault.lost_response(), operation="cancel_order")
    flaky("get_user_account_order_detail")
    assert client.cancel_order(alice.user_id, account, other.brokerage_order_id, options=options).status == "CANCELED"
    # And so does reconciliation: the journaled order's detail, the listing, the replaced order.
    emu.faults.add(Fault.lost_response(), operation="place_force_order")
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order_now(alice.user_id, account, confirm=True, **ORDER)
    flaky("get_user_account_recent_orders", "get_user_account_order_detail")
    assert client.reconcile_order(lost.value.intent, options=options).outcome == "placed"
    flaky("get_user_account_order_detail")
    assert client.reconcile_order(lost.value.intent, options=options).outcome == "placed"  # from the journal
    assert intents.pending() == []


def test_an_idempotent_write_policy_never_resends_an_order(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    # Whatever the policy says of writes that carry a client_order_id, an order is sent once: a 5xx
    # after the request left is an unknown outcome for reconcile_order, never a retry.
    from aims_snaptrade import RetryPolicy
    from aims_snaptrade.testing import Fault

    policy = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02, retry_idempotent_writes=True)
    client = make_client(retry=policy)
    emu.faults.add(Fault.status(503), operation="place_force_order", times=1)
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order_now(alice.user_id, alice.account_ids[0], confirm=True, **ORDER)
    assert emu.journal.count(operation="place_force_order") == 1
    unknown = lost.value
    last = emu.journal.last(operation="place_force_order")
    assert (unknown.status, unknown.operation, unknown.request_id) == (503, "place_force_order", last.request_id)
    intent = unknown.intent
    assert unknown.message.startswith(f"Order {intent.client_order_id} (BUY 0.1 AAPL) was sent and its answer lost (")
    assert unknown.hint.startswith("Do not resend it yourself: call reconcile_order(error.intent)")
    assert unknown.hint.endswith("or when to look again.")


def test_an_unknown_outcome_names_the_order_by_its_terms(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    from aims_snaptrade.testing import Fault

    emu.faults.add(Fault.status(500, code="9999"), operation="place_force_order", times=1)
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order_now(alice.user_id, alice.account_ids[0], confirm=True, action="SELL", symbol="AAPL",
                               notional_value=Decimal(50))  # fmt: skip
    intent = lost.value.intent
    assert lost.value.message.startswith(f"Order {intent.client_order_id} (SELL 50 AAPL) was sent")
    assert (lost.value.status, lost.value.code) == (500, "9999")


# --- arguments, consent and the notional cap, before anything is journaled --------------------------------


def test_a_missing_id_is_refused_naming_it(client: SafeSnapTradeClient, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    calls = {
        "user_id": [
            lambda bad: client.cancel_order(bad, account, "order-1"),
            lambda bad: client.preview_order(bad, account, **ORDER),
            lambda bad: client.place_order_now(bad, account, confirm=True, **ORDER),
        ],
        "account_id": [lambda bad: client.cancel_order(alice.user_id, bad, "order-1")],
        "brokerage_order_id": [
            lambda bad: client.cancel_order(alice.user_id, account, bad),
            lambda bad: client.replace_order(alice.user_id, account, bad, action="BUY", units=1, confirm=True),
            lambda bad: client.get_order(alice.user_id, account, bad),
        ],
    }
    for name, attempts in calls.items():
        for attempt in attempts:
            for bad in ("", "  ", None):
                with pytest.raises(e.SnapTradeValidationError, match=f"^{name} must be a non-empty string"):
                    attempt(bad)


def test_trade_consent_is_checked_for_the_user_of_every_order_write(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    class NoTradeForAlice:
        def has_consent(self, user_id: str, scope: str) -> bool:
            return not (scope == "trade" and user_id == alice.user_id)

    account = alice.account_ids[0]
    allowed = make_client(confirmation_key="k" * 32)
    preview = allowed.preview_order(alice.user_id, account, **ORDER)
    client = make_client(consent=NoTradeForAlice(), confirmation_key="k" * 32)
    emu.journal.clear()
    with pytest.raises(e.SnapTradeConsentRequiredError):
        client.preview_order(alice.user_id, account, **ORDER)
    assert len(emu.journal) == 0  # refused before any request, the symbol look-up included
    for attempt in (
        lambda: client.preview_order(alice.user_id, account, **ORDER),
        lambda: client.place_order(preview, confirmation=preview.confirmation),
        lambda: client.place_order_now(alice.user_id, account, confirm=True, **ORDER),
        lambda: client.cancel_order(alice.user_id, account, "order-1"),
        lambda: client.replace_order(alice.user_id, account, "order-1", action="BUY", units=1, confirm=True),
    ):
        with pytest.raises(e.SnapTradeConsentRequiredError):
            attempt()
    # Refused before the intent is journaled (docs/trading.md), not by the road after it.
    assert _sent(emu) == 0 and intents.export_user(alice.user_id) == []


def test_orders_within_the_notional_cap_go_through(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    from aims_snaptrade.testing import Fault

    client = make_client(max_order_notional=Decimal(1000))
    account = alice.account_ids[0]
    preview = client.preview_order(alice.user_id, account, action="BUY", symbol="AAPL", units=Decimal(2))
    assert client.place_order(preview, confirmation=preview.confirmation).status == "EXECUTED"
    by_value = client.preview_order(alice.user_id, account, action="BUY", symbol="AAPL", notional_value=500)
    assert client.place_order(by_value, confirmation=by_value.confirmation).status == "EXECUTED"
    working = client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1,
                                     order_type="Limit", price=1)  # fmt: skip
    assert client.replace_order(alice.user_id, account, working.brokerage_order_id, action="BUY", units=2,
                                order_type="Limit", price=1, confirm=True).total_quantity == 2  # fmt: skip
    # A market order in units is valued at the last trade price (else the ask), by ticker or by
    # SnapTrade's symbol id.
    for quote, allowed in (({"last_trade_price": 100, "ask_price": 900}, True),
                           ({"last_trade_price": None, "ask_price": 300}, True),
                           ({"last_trade_price": None, "ask_price": 600}, False)):  # fmt: skip
        emu.faults.add(Fault.answer([quote]), operation="get_user_account_quotes")
        if allowed:
            client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=2)
        else:
            with pytest.raises(e.SnapTradeOrderLimitError, match=r"worth about 1200\.00"):
                client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=2)
    universal = preview.universal_symbol_id
    order = client.place_order_now(alice.user_id, account, confirm=True, action="BUY", universal_symbol_id=universal,
                                   units=1)  # fmt: skip
    assert order.symbol == "AAPL"
    for not_a_list in ({"quotes": []}, None):  # no price to value the order at
        emu.faults.add(Fault.answer(not_a_list), operation="get_user_account_quotes")
        with pytest.raises(e.SnapTradeOrderLimitError, match="cannot be bounded"):
            client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1)
    assert intents.pending() == []


# --- preview, confirm, place: the refusals say what happened ------------------------------------------------


def test_confirmation_refusals_say_nothing_was_sent(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from aims_snaptrade.trading import flows

    client = make_client()
    account = alice.account_ids[0]
    with pytest.raises(e.SnapTradeValidationError, match="needs the OrderPreview from preview_order, got dict"):
        client.place_order({"trade_id": "t"}, confirmation="x")  # type: ignore[arg-type]
    preview = client.preview_order(alice.user_id, account, **ORDER)
    changed = preview.model_copy(update={"units": Decimal(2)})
    refusals = []
    with pytest.raises(e.SnapTradeConfirmationError) as mismatch:
        client.place_order(changed, confirmation=preview.confirmation)
    refusals.append(mismatch.value)
    # At the expiry instant itself the preview has expired.
    real_now = flows._now
    monkeypatch.setattr(flows, "_now", lambda: preview.expires_at)
    with pytest.raises(e.SnapTradeConfirmationError) as expired:
        client.place_order(preview, confirmation=preview.confirmation)
    refusals.append(expired.value)
    monkeypatch.setattr(flows, "_now", lambda: preview.expires_at - timedelta(microseconds=1))
    client.place_order(preview, confirmation=preview.confirmation)
    monkeypatch.setattr(flows, "_now", real_now)
    with pytest.raises(e.SnapTradeConfirmationError) as used:
        client.place_order(preview, confirmation=preview.confirmation)
    refusals.append(used.value)
    assert [r.reason for r in refusals] == ["mismatch", "expired", "used"]
    for refused in refusals:
        assert refused.operation == "place_order"
        assert refused.message[0].isupper() and refused.message.endswith("; nothing was sent."), refused.message
    assert mismatch.value.message == (
        "The confirmation does not match this preview (another order, account, user or expiry, "
        "or a preview changed after it was issued); nothing was sent."
    )
    assert preview.client_order_id in used.value.message
    assert used.value.hint and "reconcile_order(client_order_id)" in used.value.hint
    assert used.value.hint.startswith("To learn what became of it")
    assert emu.journal.count(operation="place_order") == 1


def test_an_unknown_ticker_is_refused_before_the_impact_check(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    from aims_snaptrade.testing import Fault

    for answer in ({}, {"id": ""}, {"id": 7}):
        emu.faults.add(Fault.answer(answer), operation="get_symbols_by_ticker")
        with pytest.raises(e.SnapTradeNotFoundError) as unknown:
            client.preview_order(alice.user_id, alice.account_ids[0], action="BUY", symbol="ZZZZ", units=1)
        assert (unknown.value.message, unknown.value.operation) == (
            "SnapTrade knows no symbol 'ZZZZ'.",
            "preview_order",
        )
    assert emu.journal.count(operation="get_order_impact") == 0


# --- cancel and replace ----------------------------------------------------------------------------------


def test_cancellations_are_journaled_as_settled_with_the_cancelled_order(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    from datetime import UTC, datetime

    from aims_snaptrade.testing import Fault

    account = alice.account_ids[0]
    limit = {"action": "BUY", "symbol": "AAPL", "units": 1, "order_type": "Limit", "price": 1, "confirm": True}
    answered, lost = (client.place_order_now(alice.user_id, account, **limit) for _ in range(2))
    journaled: list[Any] = []
    update = intents.update
    intents.update = lambda intent: journaled.append(intent) or update(intent)  # type: ignore[method-assign]
    order = client.cancel_order(alice.user_id, account, answered.brokerage_order_id)
    assert (order.status, order.account_id) == ("CANCELED", account)
    settled = journaled[-1]
    assert (settled.kind, settled.status, settled.brokerage_order_id, settled.detail) == (
        "cancel",
        "placed",
        answered.brokerage_order_id,
        "answered",
    )
    emu.faults.add(Fault.lost_response(), operation="cancel_order")
    order = client.cancel_order(alice.user_id, account, lost.brokerage_order_id)
    assert (order.status, order.account_id, order.brokerage_order_id) == ("CANCELED", account, lost.brokerage_order_id)
    settled = journaled[-1]
    assert (settled.status, settled.brokerage_order_id, settled.detail) == (
        "placed",
        lost.brokerage_order_id,
        "the order says CANCELED",
    )
    # Settled on the intent as journaled when the call ended: nothing of it can leave any more.
    assert settled.left_by is not None and settled.left_by <= settled.settled_at <= datetime.now(UTC)
    assert intents.pending() == []


def test_a_replacement_keeps_the_replaced_orders_security_and_refuses_what_it_cannot_replace(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    account = alice.account_ids[0]
    limit = {"action": "BUY", "symbol": "MSFT", "units": 1, "order_type": "Limit", "price": 1, "confirm": True}
    working = client.place_order_now(alice.user_id, account, **limit)
    new = client.replace_order(alice.user_id, account, working.brokerage_order_id, action="BUY", units=3,
                               order_type="Limit", price=2, confirm=True)  # fmt: skip
    (intent,) = [i for i in intents._rows.values() if i.kind == "replace"]
    assert (intent.symbol, intent.universal_symbol_id) == (working.symbol, working.universal_symbol_id)
    assert intent.replaces == working.brokerage_order_id and intent.brokerage_order_id == new.brokerage_order_id
    assert new.symbol == "MSFT"
    with pytest.raises(e.SnapTradeValidationError, match="only an open order can be replaced") as closed:
        client.replace_order(alice.user_id, account, working.brokerage_order_id, action="BUY", units=4,
                             order_type="Limit", price=2, confirm=True)  # fmt: skip
    assert closed.value.operation == "replace_order"
    # The client's replace_order takes units only; the flow itself refuses a notional value too.
    terms = {"action": "BUY", "notional_value": Decimal(10), "order_type": "Limit", "price": Decimal(2)}
    with pytest.raises(e.SnapTradeValidationError) as by_value:
        client._run(client._trading.replace_order(alice.user_id, account, new.brokerage_order_id, terms, confirm=True))
    assert (by_value.value.message, by_value.value.operation) == (
        "replace_order needs units (not notional_value).",
        "replace_order",
    )


def test_an_answer_without_an_order_id_is_an_unknown_outcome(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    from datetime import UTC, datetime

    from aims_snaptrade.testing import Fault

    account = alice.account_ids[0]
    order = client.place_order_now(alice.user_id, account, confirm=True, **ORDER)
    assert order.account_id == account and order.brokerage_order_id
    for answer in ({}, {"brokerage_order_id": ""}, {"brokerage_order_id": 7}, []):
        emu.faults.add(Fault.answer(answer), operation="place_force_order")  # placed; the answer says nothing
        with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
            client.place_order_now(alice.user_id, account, confirm=True, **ORDER)
        assert "the answer carried no brokerage_order_id" in lost.value.message
        assert lost.value.request_id == emu.journal.last(operation="place_force_order").request_id
        intent = lost.value.intent
        assert intent.status == "pending" and intents.get(intent.client_order_id) == intent
        assert intent.left_by is not None and intent.left_by <= datetime.now(UTC)  # the call is over
        assert client.reconcile_order(intent).outcome == "placed"


def test_the_notional_cap_is_inclusive_and_an_unbounded_order_is_refused_with_a_way_out(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    from aims_snaptrade.testing import Fault

    client = make_client(max_order_notional=Decimal(100))
    account = alice.account_ids[0]
    client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", notional_value=100)
    with pytest.raises(e.SnapTradeOrderLimitError) as above:
        client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL",
                               notional_value=Decimal("100.01"))  # fmt: skip
    assert above.value.message == "The order is worth about 100.01, above the maximum of 100 per order."
    emu.faults.add(Fault.answer([]), operation="get_user_account_quotes")
    with pytest.raises(e.SnapTradeOrderLimitError) as unbounded:
        client.place_order_now(alice.user_id, account, confirm=True, **ORDER)
    assert unbounded.value.message == "The order's value cannot be bounded, and orders are capped at 100."
    assert unbounded.value.hint == "Give a limit price or a notional_value so the cap can be checked."
    assert unbounded.value.operation == "place_force_order"


def test_the_last_price_is_read_only_to_check_the_cap_of_an_order_in_units(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    account = alice.account_ids[0]
    uncapped, capped = make_client(), make_client(max_order_notional=Decimal(10_000))
    by_value = {"action": "BUY", "symbol": "AAPL", "notional_value": Decimal(50)}
    for client, terms, quotes in ((uncapped, ORDER, 0), (capped, by_value, 0), (capped, ORDER, 1)):
        emu.journal.clear()
        client.place_order_now(alice.user_id, account, confirm=True, **terms)
        assert emu.journal.count(operation="get_user_account_quotes") == quotes, (terms, quotes)


def test_a_client_order_id_already_journaled_is_refused_and_nothing_is_sent(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    import uuid

    from aims_snaptrade.testing.order_intent_store_conformance import make_intent

    mine = str(uuid.uuid4())
    intents.record(make_intent(client_order_id=mine, user_id=alice.user_id, account_id=alice.account_ids[0]))
    with pytest.raises(e.SnapTradeConflictError) as taken:
        client.place_order_now(alice.user_id, alice.account_ids[0], confirm=True, client_order_id=mine, **ORDER)
    assert taken.value.operation == "place_force_order"
    assert taken.value.message == f"An order with client_order_id {mine} is already journaled; nothing was sent."
    assert taken.value.hint == "Call reconcile_order(client_order_id) to learn what became of it."
    assert _sent(emu) == 0


def test_the_calls_options_reach_the_order_write_itself(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # One order write per account per second, and the client fails fast for budget; the call's
    # own options say wait. Each write right after another gets its slot only by waiting.
    from aims_snaptrade import CallOptions
    from aims_snaptrade.testing.order_intent_store_conformance import make_intent

    client = make_client(trade_limit_per_account=1, trade_limit_window=1, rate_limit_mode="fail")
    wait = CallOptions(rate_limit_mode="wait", max_wait=5.0)
    account = alice.account_ids[0]
    preview = client.preview_order(alice.user_id, account, **ORDER)
    working = client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1,
                                     order_type="Limit", price=1)  # fmt: skip
    client.place_order(preview, confirmation=preview.confirmation, options=wait)
    new = client.replace_order(alice.user_id, account, working.brokerage_order_id, action="BUY", units=2,
                               order_type="Limit", price=1, confirm=True, options=wait)  # fmt: skip
    client.cancel_order(alice.user_id, account, new.brokerage_order_id, options=wait)
    never_sent = make_intent(user_id=alice.user_id, account_id=account, units=Decimal(3), order_type="Market",
                             price=None)  # fmt: skip
    intents.record(never_sent)
    assert client.reconcile_order(never_sent, resend=True, options=wait).resent
    with pytest.raises(e.SnapTradeBudgetExhaustedError):
        client.place_order_now(alice.user_id, account, confirm=True, **ORDER)  # the client's own mode: fail
    assert intents.pending() == []


def test_each_intent_is_sent_as_the_request_that_places_it() -> None:
    # What goes on the wire for each kind of intent: a replacement names its security by ticker
    # (SnapTrade's replace takes a symbol) and the order it replaces.
    from aims_snaptrade.testing.order_intent_store_conformance import make_intent
    from aims_snaptrade.trading.flows import TradingFlows

    for universal in (None, "u-aapl"):
        replace = make_intent(kind="replace", replaces="order-9", universal_symbol_id=universal)
        operation, arguments, budget = TradingFlows.request_of(replace)
        assert (operation, budget) == ("replace_order", None)
        assert arguments["symbol"] == "AAPL" and arguments["brokerage_order_id"] == "order-9"
        assert "universal_symbol_id" not in arguments and "client_order_id" not in arguments
        assert (arguments["units"], arguments["price"], arguments["action"]) == (replace.units, replace.price, "BUY")
    force = make_intent(kind="force", universal_symbol_id="u-aapl")
    operation, arguments, budget = TradingFlows.request_of(force)
    assert (operation, budget, arguments["client_order_id"]) == ("place_force_order", None, force.client_order_id)
    assert arguments["universal_symbol_id"] == "u-aapl" and arguments["user_id"] == force.user_id
    checked = make_intent(kind="checked", trade_id="trade-7")
    assert TradingFlows.request_of(checked) == ("place_order", {"user_id": checked.user_id, "trade_id": "trade-7"},
                                                checked.account_id)  # fmt: skip


def test_a_confirmed_preview_counts_against_its_accounts_trade_limit(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # Placing a checked trade names no account on the wire: the trade limit must still be the account's.
    client = make_client(trade_limit_per_account=1, trade_limit_window=60, rate_limit_mode="fail")
    first, second = alice.account_ids
    preview = client.preview_order(alice.user_id, first, **ORDER)
    client.place_order_now(alice.user_id, first, confirm=True, **ORDER)
    with pytest.raises(e.SnapTradeBudgetExhaustedError) as refused:
        client.place_order(preview, confirmation=preview.confirmation)
    assert refused.value.limit_scope == "trade"
    assert emu.journal.count(operation="place_order") == 0
    other = client.preview_order(alice.user_id, second, **ORDER)
    assert client.place_order(other, confirmation=other.confirmation).status == "EXECUTED"  # another account


def test_a_refused_order_is_journaled_as_not_placed_with_the_refusal(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    with pytest.raises(e.SnapTradeValidationError) as refused:
        client.place_order_now(alice.user_id, alice.account_ids[0], confirm=True, action="BUY", symbol="AAPL",
                               units=1_000_000)  # fmt: skip
    (intent,) = intents.export_user(alice.user_id)
    assert (intent["status"], intent["brokerage_order_id"]) == ("not_placed", None)
    assert intent["detail"] == f"SnapTradeValidationError: {refused.value.message}"
    assert intent["settled_at"] is not None


def test_the_calls_timeout_bounds_the_order_write_itself(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # Each write is answered after 0.5 s; the call's own timeout is 0.1 s (the client's is the
    # default), so every write sent with the call's options ends as an unknown outcome.
    from aims_snaptrade import CallOptions
    from aims_snaptrade.testing import Fault
    from aims_snaptrade.testing.order_intent_store_conformance import make_intent

    short = CallOptions(timeout=(5.0, 0.1))
    account = alice.account_ids[0]
    limit = {"action": "BUY", "symbol": "AAPL", "units": 1, "order_type": "Limit", "price": 1}
    working = client.place_order_now(alice.user_id, account, confirm=True, **limit)
    preview = client.preview_order(alice.user_id, account, **ORDER)
    never_sent = make_intent(user_id=alice.user_id, account_id=account, kind="cancel",
                             cancels=working.brokerage_order_id, action=None, symbol=None, units=None,
                             order_type=None, price=None)  # fmt: skip
    intents.record(never_sent)
    writes = [
        ("place_force_order", lambda: client.place_order_now(alice.user_id, account, confirm=True, options=short,
                                                             **ORDER)),
        ("place_order", lambda: client.place_order(preview, confirmation=preview.confirmation, options=short)),
        ("replace_order", lambda: client.replace_order(alice.user_id, account, working.brokerage_order_id,
                                                       confirm=True, options=short, action="BUY", units=2,
                                                       order_type="Limit", price=1)),
        ("cancel_order", lambda: client.reconcile_order(never_sent, resend=True, options=short)),
    ]  # fmt: skip
    for operation, write in writes:
        emu.faults.add(Fault.latency(0.5), operation=operation)
        with pytest.raises(e.SnapTradeUnknownOutcomeError):
            write()


def test_place_order_now_refusals_say_how_to_proceed(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    account = alice.account_ids[0]
    with pytest.raises(e.SnapTradeGuardrailError) as unconfirmed:
        client.place_order_now(alice.user_id, account, confirm=False, **ORDER)
    assert unconfirmed.value.message == "place_order_now places an order without a preview and needs confirm=True."
    assert unconfirmed.value.hint == (
        "Prefer preview_order() and place_order(preview, confirmation=...); pass confirm=True otherwise."
    )
    for bad in ("not-a-uuid", 123, "7f0c5f8e-8f43-1b8e-9d55-0f1f9e1f2a3b"):
        with pytest.raises(e.SnapTradeValidationError) as refused:
            client.place_order_now(alice.user_id, account, confirm=True, client_order_id=bad, **ORDER)  # type: ignore[arg-type]
        assert refused.value.message == f"client_order_id must be a UUID4, got {bad!r}."
        assert refused.value.operation == "place_force_order"
    assert _sent(emu) == 0
