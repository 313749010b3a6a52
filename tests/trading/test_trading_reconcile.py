"""Unknown outcomes: the intent travels with the error, reconcile settles it, resending only on request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade import errors as e
from aims_snaptrade.testing import ConnectedUser, Fault, SnapTradeEmulator
from aims_snaptrade.trading import SQLiteOrderIntentStore

BUY = {"action": "BUY", "symbol": "AAPL", "units": Decimal("0.5")}


def orders_of(emu: SnapTradeEmulator, account: str, client_order_id: str) -> int:
    return sum(o.client_order_id == client_order_id for o in emu.state.get_account(account).orders)


@pytest.mark.parametrize("operation", ["place_force_order", "place_order"])
def test_a_lost_answer_is_an_unknown_outcome_settled_as_placed(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, operation: str
) -> None:
    account = alice.account_ids[0]
    emu.faults.add(Fault.lost_response(), operation=operation)
    if operation == "place_order":
        preview = client.preview_order(alice.user_id, account, **BUY)
        with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
            client.place_order(preview, confirmation=preview.confirmation)
    else:
        with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
            client.place_order_now(alice.user_id, account, confirm=True, **BUY)
    intent = lost.value.intent
    assert intent.status == "pending" and intent.account_id == account
    assert [i.client_order_id for i in client.pending_order_intents] == [intent.client_order_id]
    settled = client.reconcile_order(intent)
    assert settled.outcome == "placed" and settled.order is not None
    assert settled.order.total_quantity == Decimal("0.5")
    assert client.pending_order_intents == []
    assert emu.journal.count(operation=operation) == 1  # never resent
    # Settled intents stay settled, and resend=True never sends a placed order again.
    again = client.reconcile_order(intent.client_order_id, resend=True)
    assert again.outcome == "placed" and not again.resent
    assert emu.journal.count(operation=operation) == 1


def test_an_unsent_order_is_unknown_until_it_settles_then_resent_only_on_request(
    make_client: Callable[..., SafeSnapTradeClient], alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    client = make_client(order_settle_seconds=600)
    account = alice.account_ids[0]
    emu.faults.add(Fault.drop(), operation="place_force_order")  # closed before processing
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.place_order_now(alice.user_id, account, confirm=True, **BUY)
    intent = lost.value.intent
    early = client.reconcile_order(intent, resend=True)
    assert early.outcome == "unknown" and not early.resent
    assert early.retry_at is not None and early.retry_at > datetime.now(UTC)
    assert emu.journal.count(operation="place_force_order") == 1

    later = make_client(order_settle_seconds=0)  # the settle window is over
    settled = later.reconcile_order(intent)
    assert settled.outcome == "not_placed" and orders_of(emu, account, intent.client_order_id) == 0
    resent = later.reconcile_order(intent, resend=True)
    assert resent.outcome == "placed" and resent.resent and resent.intent.attempts == 2
    assert orders_of(emu, account, intent.client_order_id) == 1
    assert later.reconcile_order(intent, resend=True).outcome == "placed"
    assert orders_of(emu, account, intent.client_order_id) == 1


def test_a_lost_replace_is_found_by_its_terms(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    account = alice.account_ids[0]
    working = client.place_order_now(
        alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1, order_type="Limit", price=1
    )
    emu.faults.add(Fault.lost_response(), operation="replace_order")
    terms: dict[str, Any] = {"action": "BUY", "units": 3, "order_type": "Limit", "price": Decimal(2), "confirm": True}
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.replace_order(alice.user_id, account, working.brokerage_order_id, **terms)
    settled = client.reconcile_order(lost.value.intent)
    assert settled.outcome == "placed" and settled.order is not None
    replacement = [o for o in emu.state.get_account(account).orders if o.replaces == working.brokerage_order_id]
    assert [o.brokerage_order_id for o in replacement] == [settled.order.brokerage_order_id]


def test_a_lost_cancel_is_looked_up_at_once(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    account = alice.account_ids[0]
    working = client.place_order_now(
        alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1, order_type="Limit", price=1
    )
    emu.faults.add(Fault.lost_response(), operation="cancel_order")
    assert client.cancel_order(alice.user_id, account, working.brokerage_order_id).status == "CANCELED"
    emu.faults.add(Fault.drop(), operation="cancel_order")
    other = client.place_order_now(
        alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1, order_type="Limit", price=1
    )
    with pytest.raises(e.SnapTradeUnknownOutcomeError, match="cancellation") as lost:
        client.cancel_order(alice.user_id, account, other.brokerage_order_id)
    # Journaled like an order: the dropped cancellation never arrived, so it settles as not done,
    # and only then may it be sent again.
    intent = lost.value.intent
    assert intent.kind == "cancel" and intent.cancels == other.brokerage_order_id
    assert client.pending_order_intents == [intent]
    verdict = client.reconcile_order(intent)
    assert verdict.outcome == "not_placed" and verdict.source == "order_detail", verdict
    again = client.reconcile_order(intent, resend=True)
    assert again.resent and again.outcome == "placed" and again.order.status == "CANCELED"
    assert client.pending_order_intents == []


def test_pending_intents_are_listed_at_start_up_and_reconciled(
    make_client: Callable[..., SafeSnapTradeClient],
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account = alice.account_ids[0]
    first = make_client(intents=SQLiteOrderIntentStore(tmp_path / "intents.db"))
    emu.faults.add(Fault.lost_response(), operation="place_force_order", times=2)
    ids = []
    for _ in range(2):
        with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
            first.place_order_now(alice.user_id, account, confirm=True, **BUY)
        ids.append(lost.value.intent.client_order_id)
    first.close()
    restarted = make_client(intents=SQLiteOrderIntentStore(tmp_path / "intents.db"))
    assert [i.client_order_id for i in restarted.pending_order_intents] == ids
    assert all(cid in caplog.text for cid in ids)
    results = restarted.reconcile_pending()
    assert [r.outcome for r in results] == ["placed", "placed"]
    assert restarted.pending_order_intents == []
    assert all(orders_of(emu, account, cid) == 1 for cid in ids)


async def test_async_reconcile(aclient: Any, alice: ConnectedUser, emu: SnapTradeEmulator) -> None:
    emu.faults.add(Fault.lost_response(), operation="place_order")
    preview = await aclient.preview_order(alice.user_id, alice.account_ids[0], **BUY)
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        await aclient.place_order(preview, confirmation=preview.confirmation)
    assert [r.outcome for r in await aclient.reconcile_pending()] == ["placed"]
    assert (await aclient.reconcile_order(lost.value.intent)).order.total_quantity == Decimal("0.5")


def test_an_intent_older_than_recent_orders_is_looked_up_in_the_order_list(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: Any
) -> None:
    from datetime import timedelta

    from aims_snaptrade.testing.order_intent_store_conformance import make_intent

    account = alice.account_ids[0]
    old = datetime.now(UTC) - timedelta(days=2)
    terms = {"user_id": alice.user_id, "account_id": account, "units": Decimal("0.5"), "order_type": "Market"}
    found, missing = (make_intent(**terms, price=None, created_at=old, sent_at=old) for _ in range(2))
    for intent in (found, missing):
        intents.record(intent)
    emu.sdk().trading.place_force_order(  # found's order reached the brokerage; its answer never came back
        account_id=account,
        action="BUY",
        symbol="AAPL",
        order_type="Market",
        time_in_force="Day",
        units=0.5,
        client_order_id=found.client_order_id,
        user_id=alice.user_id,
        user_secret=alice.user_secret,
    )
    emu.journal.clear()
    placed = client.reconcile_order(found)
    assert (placed.outcome, placed.source, placed.stale) == ("placed", "orders", True)  # an order listed exists
    # The only order carries the other client_order_id, but SnapTrade's order list is cached: an
    # order missing there proves nothing, so no not_placed (and no resend) rests on it.
    verdict = client.reconcile_order(missing)
    assert (verdict.outcome, verdict.unknown_reason, verdict.stale) == ("unknown", "stale_source", True), verdict
    again = client.reconcile_order(missing, resend=True)
    assert (again.outcome, again.resent) == ("unknown", False)
    assert intents.get(missing.client_order_id).status == "pending"
    assert emu.journal.count(operation="get_user_account_orders") == 3  # recent orders cover one day only
    assert emu.journal.count(operation="get_user_account_recent_orders") == 0
