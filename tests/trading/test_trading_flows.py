"""Preview, confirm, place once: the two-step flow, its token, and the guards that send nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade import errors as e
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator
from aims_snaptrade.trading import MemoryOrderIntentStore, OrderPreview

ONCE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def sent(emu: SnapTradeEmulator, *operations: str) -> int:
    return sum(emu.journal.count(operation=op) for op in operations)


WRITES = ("place_order", "place_force_order", "replace_order", "cancel_order")


def test_preview_then_place_once(client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator) -> None:
    account = alice.account_ids[0]
    before = emu.state.get_account(account).cash
    preview = client.preview_order(alice.user_id, account, action="BUY", symbol="AAPL", units=Decimal(2))
    assert preview.symbol == "AAPL" and preview.units == Decimal(2)
    assert preview.estimated_cost == preview.units * preview.estimated_price
    assert preview.buying_power_after == before - preview.estimated_cost
    assert preview.estimated_fees == Decimal(0)
    assert sent(emu, *WRITES) == 0  # a preview places nothing

    order = client.place_order(preview, confirmation=preview.confirmation)
    assert order.status == "EXECUTED" and order.filled_quantity == Decimal(2)
    assert isinstance(order.execution_price, Decimal)
    intent = client._stores["intents"].get(preview.client_order_id)
    assert intent.status == "placed" and intent.brokerage_order_id == order.brokerage_order_id
    assert [o.trade_id for o in emu.state.get_account(account).orders].count(preview.trade_id) == 1


def test_a_token_is_refused_after_use(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    preview = client.preview_order(alice.user_id, alice.account_ids[0], action="BUY", symbol="AAPL", units=1)
    client.place_order(preview, confirmation=preview.confirmation)
    with pytest.raises(e.SnapTradeConfirmationError) as refused:
        client.place_order(preview, confirmation=preview.confirmation)
    assert refused.value.reason == "used"
    assert sent(emu, "place_order") == 1


def test_a_token_is_refused_after_expiry(
    make_client: Callable[..., SafeSnapTradeClient], alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    client = make_client(order_preview_ttl=0.2)
    preview = client.preview_order(alice.user_id, alice.account_ids[0], action="BUY", symbol="AAPL", units=1)
    time.sleep(0.25)
    with pytest.raises(e.SnapTradeConfirmationError) as refused:
        client.place_order(preview, confirmation=preview.confirmation)
    assert refused.value.reason == "expired"
    assert sent(emu, *WRITES) == 0
    assert client.pending_order_intents == []


_CHANGES = st.one_of(
    st.builds(lambda d: {"units": d}, st.decimals(min_value=Decimal("0.01"), max_value=Decimal(50), places=2)),
    st.sampled_from(
        [
            {"symbol": "MSFT"},
            {"action": "SELL"},
            {"price": Decimal("1.00")},
            {"order_type": "Limit"},
            {"time_in_force": "GTC"},
            {"account_id": "another-account"},
            {"user_id": "mallory"},
            {"trade_id": "another-trade"},
            {"client_order_id": "7f0c5f8e-8f43-4b8e-9d55-0f1f9e1f2a3b"},
            {"universal_symbol_id": "another-symbol"},
            {"estimated_cost": Decimal(1)},
        ]
    ),
    st.builds(lambda s: {"expires_at_shift": s}, st.integers(min_value=1, max_value=10_000)),
)


@ONCE
@given(change=_CHANGES)
def test_a_token_is_refused_for_any_other_order(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, change: dict[str, Any]
) -> None:
    preview = client.preview_order(alice.user_id, alice.account_ids[0], action="BUY", symbol="AAPL", units=1)
    if "expires_at_shift" in change:
        from datetime import timedelta

        change = {"expires_at": preview.expires_at + timedelta(seconds=change["expires_at_shift"])}
    if all(getattr(preview, k) == v for k, v in change.items()):
        return  # not a change
    other = preview.model_copy(update=change)
    with pytest.raises(e.SnapTradeConfirmationError) as refused:
        client.place_order(other, confirmation=preview.confirmation)
    assert refused.value.reason == "mismatch"
    assert sent(emu, *WRITES) == 0


def test_a_token_of_another_preview_or_client_is_refused(
    make_client: Callable[..., SafeSnapTradeClient], alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    one, two = make_client(), make_client()
    first = one.preview_order(alice.user_id, alice.account_ids[0], action="BUY", symbol="AAPL", units=1)
    second = one.preview_order(alice.user_id, alice.account_ids[0], action="BUY", symbol="AAPL", units=1)
    for preview, token in ((second, first.confirmation), (first, "stc1.forged"), (first, None)):
        with pytest.raises(e.SnapTradeConfirmationError):
            one.place_order(preview, confirmation=token)  # type: ignore[arg-type]
    with pytest.raises(e.SnapTradeConfirmationError):
        two.place_order(first, confirmation=first.confirmation)  # another client, another key
    shared = "k" * 32
    three, four = make_client(confirmation_key=shared), make_client(confirmation_key=shared)
    preview = three.preview_order(alice.user_id, alice.account_ids[0], action="BUY", symbol="AAPL", units=1)
    assert four.place_order(preview, confirmation=preview.confirmation).status == "EXECUTED"
    assert sent(emu, *WRITES) == 1


_BAD_TERMS = st.one_of(
    st.fixed_dictionaries({"units": st.one_of(st.decimals(max_value=0, allow_nan=False), st.just(Decimal("NaN")))}),
    st.fixed_dictionaries({"units": st.floats(min_value=0.01, max_value=100)}),  # floats are refused
    st.fixed_dictionaries({"units": st.just(Decimal(1)), "notional_value": st.just(Decimal(100))}),
    st.fixed_dictionaries({"order_type": st.just("Limit"), "units": st.just(Decimal(1))}),  # no price
    st.fixed_dictionaries({"action": st.text(max_size=5).filter(lambda a: a.upper() not in ("BUY", "SELL"))}),
    st.fixed_dictionaries({"units": st.just(Decimal(1)), "price": st.decimals(max_value=0, allow_nan=False)}),
    st.fixed_dictionaries({"units": st.just(Decimal(1)), "symbol": st.none()}),
)


@ONCE
@given(bad=_BAD_TERMS)
def test_bad_terms_are_refused_before_anything_is_sent(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, bad: dict[str, Any]
) -> None:
    terms: dict[str, Any] = {"action": "BUY", "symbol": "AAPL", **bad}
    before = len(emu.journal)
    with pytest.raises(e.SnapTradeValidationError):
        client.preview_order(alice.user_id, alice.account_ids[0], **terms)
    with pytest.raises(e.SnapTradeValidationError):
        client.place_order_now(alice.user_id, alice.account_ids[0], confirm=True, **terms)
    assert len(emu.journal) == before
    assert client.pending_order_intents == []


def test_guards_refuse_and_send_nothing(
    make_client: Callable[..., SafeSnapTradeClient],
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
) -> None:
    account = alice.account_ids[0]
    order = {"action": "BUY", "symbol": "AAPL", "units": Decimal(1)}
    with pytest.raises(e.SnapTradeGuardrailError):
        make_client(trading_enabled=False).place_order_now(alice.user_id, account, confirm=True, **order)
    with pytest.raises(e.SnapTradeGuardrailError):
        make_client().place_order_now(alice.user_id, account, **order)  # no confirm=True

    class NoTradeConsent:
        def has_consent(self, user_id: str, scope: str) -> bool:
            return scope != "trade"

    with pytest.raises(e.SnapTradeConsentRequiredError):
        make_client(consent=NoTradeConsent()).place_order_now(alice.user_id, account, confirm=True, **order)
    capped = make_client(max_order_notional=Decimal(100))
    with pytest.raises(e.SnapTradeOrderLimitError):
        capped.place_order_now(alice.user_id, account, confirm=True, **order)  # ~228.50 at market
    with pytest.raises(e.SnapTradeOrderLimitError):
        capped.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", notional_value=101)
    assert sent(emu, *WRITES) == 0
    assert intents.pending() == [] and intents.claimed_order_ids(account) == []


def test_one_trade_per_account_per_window_through_the_budget(
    make_client: Callable[..., SafeSnapTradeClient], alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    client = make_client(trade_limit_per_account=1, trade_limit_window=60, rate_limit_mode="fail")
    first, second = alice.account_ids
    order = {"action": "BUY", "symbol": "AAPL", "units": Decimal("0.1"), "confirm": True}
    client.place_order_now(alice.user_id, first, **order)
    with pytest.raises(e.SnapTradeBudgetExhaustedError) as refused:
        client.place_order_now(alice.user_id, first, **order)
    assert refused.value.limit_scope == "trade"
    client.place_order_now(alice.user_id, second, **order)  # the budget is per account
    assert sent(emu, "place_force_order") == 2
    assert client.pending_order_intents == []  # the refused intent is settled as not placed


def test_cancel_and_replace(client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator) -> None:
    account = alice.account_ids[0]
    working = client.place_order_now(
        alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1, order_type="Limit", price="1.00"
    )
    assert working.status == "ACCEPTED" and working.limit_price == Decimal("1.00")
    with pytest.raises(e.SnapTradeGuardrailError):
        client.replace_order(alice.user_id, account, working.brokerage_order_id, action="BUY", units=2)
    new = client.replace_order(
        alice.user_id,
        account,
        working.brokerage_order_id,
        action="BUY",
        units=2,
        order_type="Limit",
        price=Decimal("2.50"),
        confirm=True,
    )
    assert new.symbol == "AAPL" and new.total_quantity == Decimal(2) and new.limit_price == Decimal("2.50")
    assert client.get_order(alice.user_id, account, working.brokerage_order_id).status == "REPLACED"
    assert client.cancel_order(alice.user_id, account, new.brokerage_order_id).status == "CANCELED"
    with pytest.raises(e.SnapTradeValidationError):
        client.cancel_order(alice.user_id, account, new.brokerage_order_id)  # no longer open


def test_emulator_checks_cash_and_holdings(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    account = alice.account_ids[0]
    held = emu.state.get_account(account).positions["AAPL"].units
    with pytest.raises(e.SnapTradeValidationError, match="holdings"):
        client.place_order_now(alice.user_id, account, confirm=True, action="SELL", symbol="AAPL", units=held + 1)
    with pytest.raises(e.SnapTradeValidationError, match="buying power"):
        client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1_000_000)
    # Definite refusals settle their intents as not placed.
    assert client.pending_order_intents == []


async def test_async_client_runs_the_same_flows(aclient: Any, alice: ConnectedUser, emu: SnapTradeEmulator) -> None:
    preview: OrderPreview = await aclient.preview_order(
        alice.user_id, alice.account_ids[1], action="BUY", symbol="KO", units=Decimal(1)
    )
    order = await aclient.place_order(preview, confirmation=preview.confirmation)
    with pytest.raises(e.SnapTradeConfirmationError):
        await aclient.place_order(preview, confirmation=preview.confirmation)
    assert order.symbol == "KO"
    assert (await aclient.reconcile_order(preview.client_order_id)).outcome == "placed"


@ONCE
@given(text=st.one_of(st.just(""), st.uuids(version=1).map(str), st.uuids(version=3).map(str), st.text(max_size=40)))
def test_a_given_client_order_id_must_be_a_uuid4(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, text: str
) -> None:
    with pytest.raises(e.SnapTradeValidationError, match="UUID4"):
        client.place_order_now(alice.user_id, alice.account_ids[0], confirm=True, client_order_id=text, **_ORDER)
    assert sent(emu, *WRITES) == 0


def test_a_given_uuid4_is_journaled_and_sent_as_given(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    import uuid

    mine = uuid.uuid4()
    order = client.place_order_now(
        alice.user_id, alice.account_ids[0], confirm=True, client_order_id=str(mine).upper(), **_ORDER
    )
    assert order.client_order_id == str(mine)
    assert client.reconcile_order(str(mine)).outcome == "placed"


_ORDER: dict[str, Any] = {"action": "BUY", "symbol": "AAPL", "units": Decimal("0.1")}
