"""Which listed order is an intent's: the matching rules of docs/trading.md, one rule at a time.

Each rule here guards against a second order: an intent wrongly settled as ``placed`` on someone
else's order is never resent (its own order is lost), and an intent wrongly settled as
``not_placed`` may be resent although its order exists. The intents are journaled by hand and
the brokerage's order book is written directly, so every field the rules read is chosen:

* a listed order carrying *another* ``client_order_id`` is never the intent's;
* an order placed before the intent existed (less the clock-skew tolerance) is never the intent's;
  one placed exactly at that bound is;
* an order already attributed to a settled intent of the account is never another intent's;
* of several unclaimed identical orders, the oldest is the intent's;
* only another pending intent of the same account, with the same terms, journaled no later than
  the order was placed, competes for it (``ambiguous``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator
from aims_snaptrade.testing.order_intent_store_conformance import make_intent
from aims_snaptrade.testing.records import Order as BookOrder
from aims_snaptrade.testing.seed import SECURITIES
from aims_snaptrade.trading import MemoryOrderIntentStore, OrderIntent

UNITS = Decimal("0.5")
TOLERANCE = 30.0  # the client's clock_skew_tolerance (the default)


def _book(
    emu: SnapTradeEmulator,
    account: str,
    *,
    at: datetime,
    client_order_id: str | None = None,
    units: Decimal = UNITS,
    ticker: str = "AAPL",
    action: str = "BUY",
) -> str:
    """An executed market order in the brokerage's book, placed at ``at``; its brokerage order id."""
    order = BookOrder(
        brokerage_order_id=emu.state.new_id("order"),
        account_id=account,
        security=SECURITIES[ticker],
        action=action,
        order_type="Market",
        time_in_force="Day",
        status="EXECUTED",
        total_quantity=units,
        filled_quantity=units,
        canceled_quantity=Decimal(0),
        limit_price=None,
        stop_price=None,
        execution_price=Decimal("100"),
        time_placed=at,
        time_updated=at,
        time_executed=at,
        client_order_id=client_order_id,
    )
    with emu.state.lock:
        emu.state.get_account(account).orders.append(order)
    return order.brokerage_order_id


def _intent(alice: ConnectedUser, account: str, *, at: datetime, **changes: Any) -> OrderIntent:
    """A pending force intent for a market buy of ``UNITS`` AAPL, journaled at ``at``."""
    values: dict[str, Any] = {
        "user_id": alice.user_id,
        "account_id": account,
        "units": UNITS,
        "order_type": "Market",
        "price": None,
        "created_at": at,
        "sent_at": at,
        "left_by": at,
        **changes,
    }
    return make_intent(**values)


def _journal(intents: MemoryOrderIntentStore, *made: OrderIntent) -> None:
    for intent in made:
        assert intents.record(intent)


def _clear_book(emu: SnapTradeEmulator, account: str) -> None:
    with emu.state.lock:
        emu.state.get_account(account).orders.clear()


# --- another client_order_id ------------------------------------------------------------------------


def test_an_order_carrying_another_client_order_id_is_never_the_intents(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # The intent's own request never arrived. The account holds identical orders, placed after the
    # intent, that carry other client_order_ids: one of another journaled (pending) intent, one
    # unknown to this journal. Neither is the intent's, so it is not placed (and may be resent).
    account = alice.account_ids[0]
    now = datetime.now(UTC)
    mine = _intent(alice, account, at=now - timedelta(seconds=5))
    theirs = _intent(alice, alice.account_ids[1], at=now - timedelta(seconds=5))  # pending elsewhere
    _journal(intents, mine, theirs)
    _book(emu, account, at=now - timedelta(seconds=1), client_order_id=theirs.client_order_id)
    _book(emu, account, at=now - timedelta(seconds=2), client_order_id=str(uuid.uuid4()))
    verdict = client.reconcile_order(mine)
    assert (verdict.outcome, verdict.source) == ("not_placed", "recent_orders"), verdict
    assert verdict.intent.brokerage_order_id is None
    again = client.reconcile_order(mine, resend=True)
    assert again.resent and again.outcome == "placed"
    own = [o for o in emu.state.get_account(account).orders if o.client_order_id == mine.client_order_id]
    assert [o.brokerage_order_id for o in own] == [again.order.brokerage_order_id]


def test_an_order_carrying_the_intents_client_order_id_is_its_whatever_its_terms(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # The echoed id is the evidence: it wins over an identical order without an id listed first,
    # and it holds even for a record whose terms or time the brokerage reports otherwise.
    account = alice.account_ids[0]
    now = datetime.now(UTC)
    mine = _intent(alice, account, at=now)
    _journal(intents, mine)
    _book(emu, account, at=now + timedelta(seconds=1))  # identical, no id, listed first (newest)
    echoed = _book(
        emu, account, at=now - timedelta(hours=2), client_order_id=mine.client_order_id, units=Decimal(3), ticker="MSFT"
    )
    verdict = client.reconcile_order(mine)
    assert (verdict.outcome, verdict.order.brokerage_order_id) == ("placed", echoed), verdict
    assert verdict.intent.brokerage_order_id == echoed and verdict.reason == "found by client_order_id"


# --- placed before the intent existed -----------------------------------------------------------------


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=-3_600_000_000, max_value=3_600_000_000))
@example(offset=0)
@example(offset=-1)
@example(offset=1)
@example(offset=-1_000_000)
def test_an_order_placed_before_the_intent_existed_is_never_the_intents(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    offset: int,
) -> None:
    # ``offset``: microseconds between the order's time and the intent's creation less the
    # clock-skew tolerance. Placed at that bound or later, it is the intent's; earlier, it is not.
    account = alice.account_ids[1]
    _clear_book(emu, account)
    created = datetime.now(UTC) - timedelta(seconds=1)
    intent = _intent(alice, account, at=created)
    _journal(intents, intent)
    placed_at = created - timedelta(seconds=TOLERANCE) + timedelta(microseconds=offset)
    order_id = _book(emu, account, at=placed_at)
    verdict = client.reconcile_order(intent)
    if offset >= 0:
        assert (verdict.outcome, verdict.order.brokerage_order_id) == ("placed", order_id), verdict
    else:
        assert verdict.outcome == "not_placed", verdict


def test_the_clock_skew_tolerance_is_the_clients_setting(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    client = make_client(clock_skew_tolerance=300)
    account = alice.account_ids[0]
    created = datetime.now(UTC) - timedelta(seconds=1)
    early, late = _intent(alice, account, at=created), _intent(alice, account, at=created, units=Decimal(2))
    _journal(intents, early, late)
    found = _book(emu, account, at=created - timedelta(seconds=299))
    _book(emu, account, at=created - timedelta(seconds=301), units=Decimal(2))
    assert client.reconcile_order(early).order.brokerage_order_id == found
    assert client.reconcile_order(late).outcome == "not_placed"


# --- claimed orders, oldest first ---------------------------------------------------------------------


def test_an_order_claimed_by_a_settled_intent_is_never_another_intents(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    account = alice.account_ids[0]
    now = datetime.now(UTC)
    first = _intent(alice, account, at=now - timedelta(seconds=10))
    second = _intent(alice, account, at=now - timedelta(seconds=2))  # journaled after the order: no rival
    _journal(intents, first, second)
    order_id = _book(emu, account, at=now - timedelta(seconds=3))
    assert client.reconcile_order(first).intent.brokerage_order_id == order_id
    # The one listed order is now the first intent's: the second's request never arrived.
    verdict = client.reconcile_order(second)
    assert verdict.outcome == "not_placed", verdict


def test_identical_intents_take_identical_orders_oldest_first(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # Journaled and placed in turn: intent 1, its order, intent 2, its order, intent 3, its order.
    # Reconciled in turn, each takes the oldest order nobody has claimed, which is its own.
    account = alice.account_ids[0]
    start = datetime.now(UTC) - timedelta(seconds=60)
    made, orders = [], []
    for n in range(3):
        made.append(_intent(alice, account, at=start + timedelta(seconds=10 * n)))
        orders.append(_book(emu, account, at=start + timedelta(seconds=10 * n + 5)))
    _journal(intents, *made)
    for intent, order_id in zip(made, orders, strict=True):
        verdict = client.reconcile_order(intent)
        assert (verdict.outcome, verdict.order.brokerage_order_id) == ("placed", order_id), verdict


# --- rivals -------------------------------------------------------------------------------------------


def test_only_a_true_rival_makes_a_match_ambiguous(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    account, other_account = alice.account_ids
    now = datetime.now(UTC)
    placed_at = now - timedelta(seconds=2)
    mine = _intent(alice, account, at=now - timedelta(seconds=10))
    order_id = _book(emu, account, at=placed_at)
    not_rivals = [
        _intent(alice, other_account, at=mine.created_at),  # another account
        _intent(alice, account, at=placed_at + timedelta(microseconds=1)),  # journaled after the order
        _intent(alice, account, at=mine.created_at, units=Decimal(2)),  # other terms
        _intent(alice, account, at=mine.created_at, action="SELL"),
        _intent(alice, account, at=mine.created_at, status="placed", brokerage_order_id="elsewhere"),  # settled
        _intent(alice, account, at=mine.created_at, kind="cancel", cancels="x", action=None, symbol=None, units=None),
    ]
    _journal(intents, mine, *not_rivals)
    verdict = client.reconcile_order(mine)
    assert (verdict.outcome, verdict.order.brokerage_order_id) == ("placed", order_id), verdict

    # Two identical unsettled intents, both journaled by the time the one order was placed (the
    # second exactly then): which one it is cannot be known, so neither is settled on it.
    one = _intent(alice, account, at=now - timedelta(seconds=10), units=Decimal("0.7"))
    two = _intent(alice, account, at=placed_at, units=Decimal("0.7"))
    three = _intent(alice, account, at=placed_at - timedelta(seconds=1), units=Decimal("0.7"))
    _journal(intents, one, two, three)
    contested = _book(emu, account, at=placed_at, units=Decimal("0.7"))
    for intent in (one, two, three):
        verdict = client.reconcile_order(intent)
        assert (verdict.outcome, verdict.unknown_reason) == ("unknown", "ambiguous"), verdict
        others = [i.client_order_id for i in (one, three, two) if i is not intent]  # oldest first
        assert verdict.reason == f"order {contested} could also be intent(s) {', '.join(others)}"
        assert verdict.retry_at is not None and verdict.retry_at > datetime.now(UTC)
        assert intents.get(intent.client_order_id).status == "pending"
    again = client.reconcile_order(one, resend=True)
    assert (again.outcome, again.resent) == ("unknown", False)  # no resend on an ambiguous listing


# --- the terms a listed order must share with the intent ----------------------------------------------

_TYPES = {"Market": ["Market", "MARKET"], "Limit": ["Limit", "LIMIT"], "StopLimit": ["StopLimit", "STOP_LIMIT"],
          "Stop": ["Stop", "STOP"]}  # fmt: skip
_HOW = st.sampled_from(["same", "omitted", "other"])


@settings(max_examples=300, deadline=None)
@given(
    action=st.sampled_from(["BUY", "SELL"]),
    symbols=st.sampled_from([("AAPL", None), (None, "u-aapl"), ("AAPL", "u-aapl")]),
    order_type=st.sampled_from(sorted(_TYPES)),
    numbers=st.tuples(*[st.sampled_from([None, Decimal(1), Decimal("2.5")])] * 3),
    how=st.fixed_dictionaries({k: _HOW for k in ("action", "symbol", "type", "units", "price", "stop")}),
    spelling=st.integers(min_value=0, max_value=1),
)
def test_a_listed_order_matches_when_every_field_it_carries_agrees(
    action: str,
    symbols: tuple[str | None, str | None],
    order_type: str,
    numbers: tuple[Decimal | None, Decimal | None, Decimal | None],
    how: dict[str, str],
    spelling: int,
) -> None:
    # docs/trading.md: symbol, side, quantity, type and prices must agree; a field the record
    # leaves out does not count against it. Order types compare by their letters ("StopLimit" is
    # "STOP_LIMIT"), sides ignoring case, numbers by value. Each field of the listed order is the
    # intent's (in another spelling), left out, or another value.
    from aims_snaptrade.trading.models import Order
    from aims_snaptrade.trading.reconcile import matches

    symbol, universal = symbols
    units, price, stop = numbers
    intent = make_intent(action=action, symbol=symbol, universal_symbol_id=universal, order_type=order_type,
                         units=units, price=price, stop=stop)  # fmt: skip
    same_number = {None: None, Decimal(1): Decimal("1.00"), Decimal("2.5"): Decimal("2.50")}
    listed: dict[str, Any] = {
        "action": {"same": action.lower() if spelling else action, "omitted": None,
                   "other": "SELL" if action == "BUY" else "BUY"}[how["action"]],
        "order_type": {"same": _TYPES[order_type][spelling], "omitted": None,
                       "other": "Market" if order_type != "Market" else "Limit"}[how["type"]],
    }  # fmt: skip
    listed["symbol"], listed["universal_symbol_id"] = {
        "same": (symbol, None) if symbol and (spelling or not universal) else (None, universal),  # one is enough
        "omitted": (None, None),
        "other": ("MSFT", "u-msft"),
    }[how["symbol"]]
    for field, wanted, key in (("total_quantity", units, "units"), ("limit_price", price, "price"),
                               ("stop_price", stop, "stop")):  # fmt: skip
        listed[field] = {"same": same_number[wanted], "omitted": None, "other": Decimal(7)}[how[key]]
    order = Order(brokerage_order_id="o-1", **listed)
    # A field counts against the match only when both sides carry it and they differ.
    carried_by_intent = {"action": True, "symbol": True, "type": True, "units": units is not None,
                         "price": price is not None, "stop": stop is not None}  # fmt: skip
    expected = not any(how[k] == "other" and carried_by_intent[k] for k in how)
    assert matches(intent, order) is expected, (intent, order)


# --- when nothing is listed: settling, then not placed --------------------------------------------------


def test_nothing_listed_is_settling_until_the_settle_window_after_left_by_is_over(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # The settle window counts from left_by (the last moment the request could have left), or
    # from sent_at for an intent journaled without one.
    client = make_client(order_settle_seconds=100)
    account = alice.account_ids[0]
    now = datetime.now(UTC)
    long_ago, ago = now - timedelta(seconds=500), lambda seconds: now - timedelta(seconds=seconds)
    cases = {
        "left_by, window open": _intent(alice, account, at=long_ago, left_by=ago(50)),
        "left_by, window over": _intent(alice, account, at=long_ago, left_by=ago(150)),
        "sent_at, window open": _intent(alice, account, at=ago(50), left_by=None),
        "sent_at, window over": _intent(alice, account, at=ago(150), left_by=None),
    }
    _journal(intents, *cases.values())
    for name, intent in cases.items():
        verdict = client.reconcile_order(intent)
        anchor = intent.left_by or intent.sent_at
        assert verdict.source == "recent_orders" and verdict.stale is False, name
        if name.endswith("open"):
            assert (verdict.outcome, verdict.unknown_reason) == ("unknown", "settling"), name
            assert verdict.retry_at == anchor + timedelta(seconds=100), name
            assert verdict.reason == "no matching order is listed, but the request may still arrive", name
            assert intents.get(intent.client_order_id) == intent  # still pending, unchanged
        else:
            assert (verdict.outcome, verdict.retry_at, verdict.unknown_reason) == ("not_placed", None, None), name
            assert verdict.reason == "no matching order is listed", name
            journaled = intents.get(intent.client_order_id)
            assert (journaled.status, journaled.detail, journaled.brokerage_order_id) == (
                "not_placed",
                "no matching order is listed",
                None,
            )
            assert journaled.settled_at is not None and journaled.settled_at >= now
            assert verdict.intent == journaled
            # Settled: asked again, the journal answers, and says why.
            again = client.reconcile_order(intent.client_order_id)
            assert (again.outcome, again.source, again.reason, again.intent) == (
                "not_placed",
                "journal",
                "no matching order is listed",
                journaled,
            )


def test_an_answer_that_proves_nothing_is_looked_at_again_a_second_later_or_when_the_window_ends(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    from aims_snaptrade.testing import Fault

    client = make_client(order_settle_seconds=100)
    account = alice.account_ids[0]
    now = datetime.now(UTC)
    over = _intent(alice, account, at=now - timedelta(seconds=500))  # window over: look again in a second
    open_ = _intent(alice, account, at=now - timedelta(seconds=500), left_by=now - timedelta(seconds=40))
    _journal(intents, over, open_)
    for intent, earliest, latest in (
        (over, timedelta(seconds=1), timedelta(seconds=1)),
        (open_, timedelta(seconds=60), timedelta(seconds=60)),
    ):
        emu.faults.add(Fault.answer([]), operation="get_user_account_recent_orders")
        before = datetime.now(UTC)
        verdict = client.reconcile_order(intent)
        assert (verdict.outcome, verdict.unknown_reason) == ("unknown", "malformed_answer"), verdict
        assert verdict.source == "recent_orders" and verdict.stale is False
        assert "proves nothing" in verdict.reason and "may still arrive" not in verdict.reason
        if intent is open_:
            assert verdict.retry_at == open_.left_by + timedelta(seconds=100)
        else:
            assert before + earliest <= verdict.retry_at <= datetime.now(UTC) + latest
        assert intents.get(intent.client_order_id) == intent


# --- placed: the journal, the order, the evidence -----------------------------------------------------


def test_a_placed_verdict_journals_the_order_and_returns_it_as_the_brokerage_reports_it(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    account = alice.account_ids[0]
    now = datetime.now(UTC)
    by_terms = _intent(alice, account, at=now - timedelta(seconds=5))
    by_id = _intent(alice, account, at=now - timedelta(seconds=5), units=Decimal(3))
    _journal(intents, by_terms, by_id)
    order_id = _book(emu, account, at=now)
    echoed = _book(emu, account, at=now, client_order_id=by_id.client_order_id, units=Decimal(3))
    for intent, brokerage_id, why in (
        (by_terms, order_id, "found by account, symbol, side, quantity, order type, price and time"),
        (by_id, echoed, "found by client_order_id"),
    ):
        emu.journal.clear()
        verdict = client.reconcile_order(intent)
        assert (verdict.outcome, verdict.source, verdict.stale) == ("placed", "recent_orders", False)
        assert verdict.reason == why
        assert verdict.order.brokerage_order_id == brokerage_id
        assert verdict.order.status == "EXECUTED" and verdict.order.account_id == account
        # The order comes from its detail (real time), not only the listing.
        assert emu.journal.count(operation="get_user_account_order_detail") == 1
        journaled = intents.get(intent.client_order_id)
        assert (journaled.status, journaled.brokerage_order_id, journaled.detail) == ("placed", brokerage_id, why)
        assert journaled.settled_at is not None and verdict.intent == journaled
        # Settled: the journal answers from now on, with the order's detail.
        again = client.reconcile_order(intent)
        assert (again.outcome, again.source, again.reason) == ("placed", "journal", why)
        assert again.order == verdict.order and again.intent == journaled


def test_reconcile_order_takes_an_intent_or_its_id_and_refuses_anything_else(
    client: SafeSnapTradeClient, alice: ConnectedUser, intents: MemoryOrderIntentStore
) -> None:
    from aims_snaptrade import errors as e

    intent = _intent(alice, alice.account_ids[0], at=datetime.now(UTC))
    _journal(intents, intent)
    assert client.reconcile_order(intent.client_order_id).intent.client_order_id == intent.client_order_id
    for bad in ("", None, 7):
        with pytest.raises(e.SnapTradeValidationError, match="OrderIntent or its client_order_id"):
            client.reconcile_order(bad)  # type: ignore[arg-type]
    unknown = str(uuid.uuid4())
    with pytest.raises(e.SnapTradeNotFoundError, match=unknown) as missing:
        client.reconcile_order(unknown)
    assert missing.value.hint and "journal" in missing.value.hint


# --- resending -----------------------------------------------------------------------------------------


def test_a_resend_journals_a_fresh_attempt_before_it_leaves(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    from aims_snaptrade import RetryPolicy
    from aims_snaptrade import errors as e
    from aims_snaptrade.testing import Fault

    client = make_client(retry=RetryPolicy(max_attempts=1, deadline=10.0), connect_timeout=1.0)
    account = alice.account_ids[0]
    old = datetime.now(UTC) - timedelta(seconds=30)
    intent = _intent(alice, account, at=old)
    _journal(intents, intent)
    assert client.reconcile_order(intent).outcome == "not_placed"
    # The resend's answer is lost: what is journaled is the new attempt, pending, with nothing of
    # the earlier settlement left on it.
    emu.faults.add(Fault.lost_response(), operation="place_force_order")
    before = datetime.now(UTC)
    with pytest.raises(e.SnapTradeUnknownOutcomeError):
        client.reconcile_order(intent, resend=True)
    pending = intents.get(intent.client_order_id)
    assert (pending.status, pending.attempts, pending.settled_at, pending.detail, pending.brokerage_order_id) == (
        "pending",
        2,
        None,
        None,
        None,
    )
    assert before <= pending.sent_at <= datetime.now(UTC) and pending.created_at == old
    assert pending.left_by is not None and pending.sent_at < pending.left_by <= datetime.now(UTC)
    # Settled from the brokerage as placed, on the attempt it echoes.
    verdict = client.reconcile_order(intent, resend=True)
    assert (verdict.outcome, verdict.resent, verdict.reason) == ("placed", False, "found by client_order_id")
    assert emu.journal.count(operation="place_force_order") == 1


def test_a_resend_answered_settles_the_journaled_attempt(
    make_client: Any, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    from aims_snaptrade import RetryPolicy

    client = make_client(retry=RetryPolicy(max_attempts=1, deadline=10.0), connect_timeout=1.0)
    account = alice.account_ids[0]
    intent = _intent(alice, account, at=datetime.now(UTC) - timedelta(seconds=30))
    _journal(intents, intent)
    journaled: list[OrderIntent] = []
    update = intents.update
    intents.update = lambda changed: journaled.append(changed) or update(changed)  # type: ignore[method-assign]
    before = datetime.now(UTC)
    verdict = client.reconcile_order(intent, resend=True)
    assert (verdict.outcome, verdict.resent, verdict.source, verdict.reason) == ("placed", True, "answer", "sent again")
    assert verdict.intent == intents.get(intent.client_order_id)
    assert (verdict.intent.status, verdict.intent.attempts) == ("placed", 2)
    assert verdict.intent.brokerage_order_id == verdict.order.brokerage_order_id
    assert verdict.order.client_order_id == intent.client_order_id
    # Journaled in turn: settled not placed, the new attempt (pending, bounded by the call's
    # deadline: twice 10 s plus the connect timeout), then settled placed from the answer.
    settled_not, attempt = journaled[0], journaled[1]
    assert settled_not.status == "not_placed"
    assert (attempt.status, attempt.attempts, attempt.settled_at, attempt.detail) == ("pending", 2, None, None)
    assert before <= attempt.sent_at
    assert (attempt.left_by - attempt.sent_at).total_seconds() == pytest.approx(2 * (10.0 + 1.0))
    assert journaled[-1].status == "placed"


# --- reconcile_pending ---------------------------------------------------------------------------------


def test_reconcile_pending_reads_a_failed_look_up_as_unknown_and_says_when_to_look_again(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    from aims_snaptrade.testing import Fault

    account = alice.account_ids[0]
    now = datetime.now(UTC)
    first = _intent(alice, account, at=now - timedelta(seconds=20))
    second = _intent(alice, account, at=now - timedelta(seconds=10), units=Decimal(2))
    _journal(intents, first, second)
    emu.faults.add(Fault.status(503), operation="get_user_account_recent_orders")
    emu.faults.add(Fault.status(429, retry_after=2), operation="get_user_account_recent_orders")
    before = datetime.now(UTC)
    results = client.reconcile_pending()
    after = datetime.now(UTC)
    assert [r.intent for r in results] == [first, second]
    for result, wait in zip(results, (30, 2), strict=True):
        assert (result.outcome, result.unknown_reason, result.source) == ("unknown", "lookup_failed", None)
        assert result.reason
        assert before + timedelta(seconds=wait) <= result.retry_at <= after + timedelta(seconds=wait)
    assert intents.pending() == [first, second]
    # Settled at the next round (with the call's options: here a retry past one 503), never resent.
    from aims_snaptrade import CallOptions, RetryPolicy

    emu.faults.add(Fault.status(503), operation="get_user_account_recent_orders", times=1)
    retry = CallOptions(retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02, deadline=10.0))
    assert [r.outcome for r in client.reconcile_pending(options=retry)] == ["not_placed", "not_placed"]
    assert emu.journal.count(operation="place_force_order") == 0


# --- where the look-up reads: recent orders, then the cached order list ----------------------------------


def _days_asked(emu: SnapTradeEmulator, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the ``days`` of every read of the account's (cached) order list."""
    asked: list[int] = []
    orders = emu.state.orders

    def recording(account: Any, state: str = "all", days: int = 30) -> Any:
        asked.append(days)
        assert state == "all"
        return orders(account, state, days)

    monkeypatch.setattr(emu.state, "orders", recording)
    return asked


def test_a_full_page_of_recent_orders_is_completed_from_the_order_list(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The intent's order is listed, but 100 newer orders fill the one page recent orders return:
    # a page of 100 proves nothing about the 101st, so the order list is read too.
    account = alice.account_ids[0]
    now = datetime.now(UTC)
    mine = _intent(alice, account, at=now - timedelta(hours=2))
    lost = _intent(alice, account, at=now - timedelta(hours=2), units=Decimal(2))  # never arrived
    _journal(intents, mine, lost)
    order_id = _book(emu, account, at=now - timedelta(hours=1))
    for n in range(100):
        _book(emu, account, at=now - timedelta(minutes=50) + timedelta(seconds=n), ticker="MSFT")
    asked = _days_asked(emu, monkeypatch)
    from aims_snaptrade.testing import Fault

    emu.faults.add(Fault.status(404, code="1011"), operation="get_user_account_order_detail")  # no detail: as listed
    verdict = client.reconcile_order(mine)
    assert (verdict.outcome, verdict.source, verdict.stale) == ("placed", "orders", True), verdict
    assert (verdict.order.brokerage_order_id, verdict.order.account_id) == (order_id, account)
    unknown = client.reconcile_order(lost, resend=True)
    assert (unknown.outcome, unknown.unknown_reason, unknown.source, unknown.stale) == (
        "unknown",
        "stale_source",
        "orders",
        True,
    )
    assert unknown.reason == "no matching order in SnapTrade's cached order list, which proves nothing"
    assert asked == [2, 2]  # two hours old: the last two days
    assert emu.journal.count(operation="get_user_account_recent_orders") == 2
    # A journal clock ahead of this one: the order list of the last day still.
    ahead = _intent(alice, account, at=now + timedelta(days=2), units=Decimal(5))
    _journal(intents, ahead)
    assert client.reconcile_order(ahead).unknown_reason == "stale_source" and asked[-1] == 1
    # The cached list is checked like any answer, and read with the call's options.
    from aims_snaptrade import CallOptions, RetryPolicy
    from aims_snaptrade.testing import Fault

    for malformed in ({}, None):
        emu.faults.add(Fault.answer(malformed), operation="get_user_account_orders")
        verdict = client.reconcile_order(lost)
        assert (verdict.outcome, verdict.unknown_reason, verdict.source) == ("unknown", "malformed_answer", "orders")
    emu.faults.add(Fault.status(503), operation="get_user_account_orders", times=1)
    retry = CallOptions(retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02, deadline=10.0))
    assert client.reconcile_order(lost, options=retry).unknown_reason == "stale_source"
    # Fewer orders, and the page is no longer full: recent orders are the whole truth.
    with emu.state.lock:
        del emu.state.get_account(account).orders[-50:]
    calls = len(asked)
    assert client.reconcile_order(lost).outcome == "not_placed"
    assert len(asked) == calls  # the order list was not read


@pytest.mark.parametrize(("age", "days"), [(timedelta(hours=23, minutes=1), 2), (timedelta(days=3, hours=1), 5),
                                           (timedelta(days=89), 90), (timedelta(days=200), 90)])  # fmt: skip
def test_an_older_intent_is_looked_up_in_the_order_list_far_enough_back(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    monkeypatch: pytest.MonkeyPatch,
    age: timedelta,
    days: int,
) -> None:
    # Recent orders cover 24 hours (23 with a margin); older intents are looked up in the order
    # list, over the whole days since the intent plus one, and at most SnapTrade's 90.
    intent = _intent(alice, alice.account_ids[0], at=datetime.now(UTC) - age)
    _journal(intents, intent)
    asked = _days_asked(emu, monkeypatch)
    verdict = client.reconcile_order(intent)
    assert (verdict.outcome, verdict.unknown_reason, verdict.source) == ("unknown", "stale_source", "orders")
    assert asked == [days]
    assert emu.journal.count(operation="get_user_account_recent_orders") == 0


# --- cancellations and replacements: the order's own detail is the evidence ------------------------------


def _set_status(emu: SnapTradeEmulator, account: str, order_id: str, status: str) -> None:
    with emu.state.lock:
        (order,) = [o for o in emu.state.get_account(account).orders if o.brokerage_order_id == order_id]
        order.status = status


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("CANCELED", "placed"), ("PARTIAL_CANCELED", "placed"), ("CANCEL_PENDING", "placed"), ("ACCEPTED", "not_placed"),
     ("EXECUTED", "not_placed")],
)  # fmt: skip
def test_a_cancellation_is_settled_by_what_the_order_says(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    status: str,
    outcome: str,
) -> None:
    account = alice.account_ids[0]
    now = datetime.now(UTC)
    order_id = _book(emu, account, at=now)
    _set_status(emu, account, order_id, status)
    cancel = _intent(alice, account, at=now, kind="cancel", cancels=order_id, action=None, symbol=None, units=None,
                     order_type=None)  # fmt: skip
    _journal(intents, cancel)
    emu.journal.clear()
    verdict = client.reconcile_order(cancel)
    assert (verdict.outcome, verdict.source, verdict.stale) == (outcome, "order_detail", False), verdict
    journaled = intents.get(cancel.client_order_id)
    if outcome == "placed":
        assert verdict.reason == f"the order says {status}" and verdict.order.status == status
        assert (journaled.status, journaled.brokerage_order_id) == ("placed", order_id)
    else:
        assert verdict.reason == f"the order is still {status}" and verdict.order is None
        assert (journaled.status, journaled.brokerage_order_id) == ("not_placed", None)
    assert journaled.detail == verdict.reason
    assert emu.journal.count(operation="get_user_account_order_detail") == 1  # the detail is the evidence
    assert emu.journal.count(operation="get_user_account_recent_orders") == 0


@pytest.mark.parametrize("replaced", ["REPLACED", "REPLACE_PENDING", "ACCEPTED", "gone", "malformed"])
def test_a_replacement_is_looked_for_only_once_the_old_order_says_replaced(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    replaced: str,
) -> None:
    from aims_snaptrade.testing import Fault

    account = alice.account_ids[0]
    now = datetime.now(UTC)
    old = _book(emu, account, at=now - timedelta(seconds=30), units=Decimal(1))
    if replaced not in ("gone", "malformed"):
        _set_status(emu, account, old, replaced)
    replaces = str(uuid.uuid4()) if replaced == "gone" else old
    intent = _intent(alice, account, at=now - timedelta(seconds=5), kind="replace", replaces=replaces)
    _journal(intents, intent)
    if replaced == "malformed":
        emu.faults.add(Fault.answer({"status": "REPLACED"}), operation="get_user_account_order_detail")
    verdict = client.reconcile_order(intent)
    expected = {
        "REPLACED": ("unknown", "replacement_pending", "recent_orders",
                     "the old order says REPLACED but its replacement is not listed yet"),
        "REPLACE_PENDING": ("unknown", "replacement_pending", "recent_orders",
                            "the old order says REPLACED but its replacement is not listed yet"),
        "ACCEPTED": ("not_placed", None, "order_detail", "the order to replace is still ACCEPTED"),
        "gone": ("unknown", "replacement_pending", "order_detail",
                 f"the replaced order {replaces} is no longer listed"),
    }  # fmt: skip
    if replaced == "malformed":
        assert (verdict.outcome, verdict.unknown_reason, verdict.source) == ("unknown", "malformed_answer",
                                                                             "order_detail")  # fmt: skip
        assert verdict.reason
    else:
        assert (verdict.outcome, verdict.unknown_reason, verdict.source, verdict.reason) == expected[replaced]
    if replaced in ("REPLACED", "REPLACE_PENDING"):
        new = _book(emu, account, at=now)  # the replacement appears
        placed = client.reconcile_order(intent)
        assert (placed.outcome, placed.source, placed.order.brokerage_order_id) == ("placed", "recent_orders", new)


def test_a_listed_order_without_a_detail_is_placed_as_listed(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # Order detail only knows single-leg orders placed through SnapTrade: a 404 there leaves the
    # listing as the order.
    from aims_snaptrade.testing import Fault

    account = alice.account_ids[0]
    now = datetime.now(UTC)
    intent = _intent(alice, account, at=now)
    _journal(intents, intent)
    order_id = _book(emu, account, at=now)
    emu.faults.add(Fault.status(404, code="1011"), operation="get_user_account_order_detail")
    verdict = client.reconcile_order(intent)
    assert (verdict.outcome, verdict.order.brokerage_order_id, verdict.order.account_id) == ("placed", order_id,
                                                                                             account)  # fmt: skip
    assert intents.get(intent.client_order_id).status == "placed"


def test_an_intent_23_hours_old_is_looked_up_in_the_order_list(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Recent orders cover 24 hours; with an hour's margin, an intent 23 hours old (to the
    # microsecond) is looked up in the order list only.
    from aims_snaptrade.trading import reconcile

    frozen = datetime.now(UTC)

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return frozen

    monkeypatch.setattr(reconcile, "datetime", Clock)
    for age, recent in ((timedelta(hours=23), 0), (timedelta(hours=23) - timedelta(microseconds=1), 1)):
        intent = _intent(alice, alice.account_ids[0], at=frozen - age)
        _journal(intents, intent)
        emu.journal.clear()
        client.reconcile_order(intent)
        assert emu.journal.count(operation="get_user_account_recent_orders") == recent, age


def test_an_order_detail_its_schema_does_not_allow_proves_nothing(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator
) -> None:
    # About the right order, with a status, and readable as an Order: but SnapTrade's schema does
    # not allow it (a list given as text), so it settles nothing.
    from aims_snaptrade import errors as e
    from aims_snaptrade.testing import Fault

    account = alice.account_ids[0]
    working = client.place_order_now(alice.user_id, account, confirm=True, action="BUY", symbol="AAPL", units=1,
                                     order_type="Limit", price=1)  # fmt: skip
    odd = {"brokerage_order_id": working.brokerage_order_id, "status": "CANCELED", "child_brokerage_order_ids": "x"}
    emu.faults.add(Fault.lost_response(), operation="cancel_order")
    emu.faults.add(Fault.answer(odd), operation="get_user_account_order_detail", times=2)
    with pytest.raises(e.SnapTradeUnknownOutcomeError) as lost:
        client.cancel_order(alice.user_id, account, working.brokerage_order_id)
    verdict = client.reconcile_order(lost.value.intent)
    assert (verdict.outcome, verdict.unknown_reason, verdict.source) == ("unknown", "malformed_answer", "order_detail")
    assert client.reconcile_order(lost.value.intent).outcome == "placed"


def test_a_pending_cancellation_never_competes_for_a_listed_order(
    client: SafeSnapTradeClient, alice: ConnectedUser, emu: SnapTradeEmulator, intents: MemoryOrderIntentStore
) -> None:
    # A record that leaves out its side and type matches any intent without terms, such as a
    # cancellation: a cancellation is no order, so it is never a rival.
    from aims_snaptrade.testing import Fault
    from aims_snaptrade.testing.render import render_order

    account = alice.account_ids[0]
    now = datetime.now(UTC)
    mine = _intent(alice, account, at=now - timedelta(seconds=5))
    cancel = _intent(alice, account, at=now - timedelta(seconds=5), kind="cancel", cancels="order-x", action=None,
                     symbol=None, units=None, order_type=None)  # fmt: skip
    _journal(intents, mine, cancel)
    order_id = _book(emu, account, at=now)
    with emu.state.lock:
        (record,) = [render_order(o) for o in emu.state.get_account(account).orders if o.brokerage_order_id == order_id]
    for field in ("action", "order_type"):
        del record[field]
    emu.faults.add(Fault.answer({"orders": [record]}), operation="get_user_account_recent_orders")
    verdict = client.reconcile_order(mine)
    assert (verdict.outcome, verdict.order.brokerage_order_id) == ("placed", order_id), verdict


def test_not_placed_from_the_very_end_of_the_settle_window(
    make_client: Any,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aims_snaptrade.trading import reconcile

    client = make_client(order_settle_seconds=60)
    frozen = datetime.now(UTC)

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return frozen

    monkeypatch.setattr(reconcile, "datetime", Clock)
    for left, outcome in ((frozen - timedelta(seconds=60), "not_placed"),
                          (frozen - timedelta(seconds=60) + timedelta(microseconds=1), "unknown")):  # fmt: skip
        intent = _intent(alice, alice.account_ids[0], at=frozen - timedelta(seconds=90), left_by=left)
        _journal(intents, intent)
        assert client.reconcile_order(intent).outcome == outcome, left


@pytest.mark.parametrize("spelling", ["naive", "-05:00"])
def test_a_listed_time_is_read_in_its_own_offset_or_as_utc(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    spelling: str,
) -> None:
    # Brokerages spell times in many ways: a time without an offset is UTC; one with an offset is
    # that instant. Either way an order placed just after the intent is the intent's.
    from datetime import timezone

    from aims_snaptrade.testing import Fault
    from aims_snaptrade.testing.render import render_order

    account = alice.account_ids[0]
    now = datetime.now(UTC)
    intent = _intent(alice, account, at=now - timedelta(seconds=5))
    _journal(intents, intent)
    order_id = _book(emu, account, at=now)
    with emu.state.lock:
        (record,) = [render_order(o) for o in emu.state.get_account(account).orders if o.brokerage_order_id == order_id]
    if spelling == "naive":
        record["time_placed"] = now.replace(tzinfo=None).isoformat()
    else:
        record["time_placed"] = now.astimezone(timezone(timedelta(hours=-5))).isoformat()
    emu.faults.add(Fault.answer({"orders": [record]}), operation="get_user_account_recent_orders")
    verdict = client.reconcile_order(intent)
    assert (verdict.outcome, verdict.order.brokerage_order_id) == ("placed", order_id), verdict
