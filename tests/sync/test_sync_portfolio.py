"""sync_portfolio against the emulator through the real SDK: incremental, isolated, webhook-driven."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_helpers import client_kwargs, secrets_of, seed

from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient
from aims_snaptrade.errors import SnapTradeAuthError, SnapTradeValidationError
from aims_snaptrade.models import Activity
from aims_snaptrade.sync import (
    AccountState,
    AccountStatus,
    LedgerChange,
    SnapTradeSyncInProgressError,
    SQLiteSyncLedger,
    SyncPolicy,
    ledger_marks,
)
from aims_snaptrade.sync.flow import _advance
from aims_snaptrade.testing import Fault, SnapTradeEmulator

ACCOUNT_READS = ("get_user_account_balance", "get_all_account_positions", "get_account_activities")


def _client(emu: SnapTradeEmulator, users: list, ledger: SQLiteSyncLedger, **kw: object) -> SafeSnapTradeClient:
    return SafeSnapTradeClient(**client_kwargs(emu, secret_store=secrets_of(users), sync_ledger=ledger, **kw))


def test_first_sync_fetches_everything_then_only_what_is_due(emu: SnapTradeEmulator) -> None:
    users = seed(emu, 1, scenario="self_directed")
    ledger = SQLiteSyncLedger(":memory:")
    with _client(emu, users, ledger) as client:
        first = client.sync_portfolio(users[0].user_id)
        assert first.accounts_listed and [a.state for a in first.accounts] == [AccountState.SYNCED] * 2
        # Self-directed: 1,200 + 150 transactions, so the first sync pages through all of them.
        assert sorted(len(a.new_activities) for a in first.accounts) == [150, 1200]
        assert all(a.balances and a.positions for a in first.accounts)
        assert first.requests == len(emu.journal) == 2 + 2 * 2 + 3
        emu.journal.clear()
        second = client.sync_portfolio(users[0].user_id)
        assert not second.accounts_listed and second.requests == 0 and len(emu.journal) == 0
        assert [a.state for a in second.accounts] == [AccountState.NOT_DUE] * 2
    # A policy whose intervals have passed: everything is due again, but no activity is new.
    with _client(emu, users, ledger, sync_policy=SyncPolicy(holdings_per_day=1e9, activities_per_day=1e9)) as client:
        third = client.sync_portfolio(users[0].user_id)
    assert third.accounts_listed and all(a.holdings_fetched and a.activities_fetched for a in third.accounts)
    assert [a.new_activities for a in third.accounts] == [[], []]
    # Only the newest day's activities are fetched again (the cursor), not the whole history.
    assert emu.journal.count(operation="get_account_activities") == 2


def test_account_failures_are_states_of_their_account(emu: SnapTradeEmulator) -> None:
    users = seed(emu, 5)
    disabled, retired, populating, failing, fine = users
    emu.disable_connection(disabled.authorization_id)
    emu.faults.add(Fault.status(410), path=f"/accounts/{retired.account_ids[0]}/positions/all", times=None)
    emu.set_populating(populating.authorization_id, 60)
    emu.faults.add(Fault.status(500), path=f"/accounts/{failing.account_ids[0]}/balances", times=None)
    ledger = SQLiteSyncLedger(":memory:")
    with _client(emu, users, ledger, retry="none") as client:
        snaps = {u.user_id: client.sync_portfolio(u.user_id) for u in users}
        [stale] = snaps[disabled.user_id].accounts
        assert stale.state is AccountState.STALE
        assert stale.reconnect_authorization_id == disabled.authorization_id
        assert emu.journal.count(user_id=disabled.user_id, account_id=disabled.account_ids[0]) == 0
        [gone410] = snaps[retired.user_id].accounts
        assert gone410.state is AccountState.RETIRED and gone410.activities_fetched and gone410.positions is None
        [pop] = snaps[populating.user_id].accounts
        assert pop.state is AccountState.POPULATING and pop.error is not None and pop.error.status == 425
        [failed] = snaps[failing.user_id].accounts
        assert failed.state is AccountState.FAILED and failed.error is not None and failed.error.status == 500
        assert not snaps[failing.user_id].ok
        assert snaps[fine.user_id].accounts[0].state is AccountState.SYNCED
        # Due next time: the failed and the populating account; not the retired one, not the stale one.
        emu.journal.clear()
        emu.finish_populating()
        again = {u.user_id: client.sync_portfolio(u.user_id) for u in users}
    assert {u for u, s in again.items() if s.requests} == {populating.user_id, failing.user_id}
    assert again[populating.user_id].accounts[0].state is AccountState.SYNCED
    stale_record = ledger.load_user(disabled.user_id)
    assert stale_record is not None and stale_record.accounts[0].status is AccountStatus.STALE


def test_a_failure_before_any_account_fails_the_user_and_frees_the_lease(emu: SnapTradeEmulator) -> None:
    users = seed(emu, 1)
    ledger = SQLiteSyncLedger(":memory:")
    emu.faults.add(Fault.unauthorized("1083"), operation="list_brokerage_authorizations")
    with _client(emu, users, ledger, retry="none") as client:
        with pytest.raises(SnapTradeAuthError):
            client.sync_portfolio(users[0].user_id)
        assert ledger.acquire_lease(users[0].user_id, "someone-else", time.time(), time.time() + 60)


def test_a_held_lease_stops_a_second_worker_before_any_request(emu: SnapTradeEmulator) -> None:
    users = seed(emu, 1)
    ledger = SQLiteSyncLedger(":memory:")
    assert ledger.acquire_lease(users[0].user_id, "worker-1", time.time(), time.time() + 60)
    with _client(emu, users, ledger) as client, pytest.raises(SnapTradeSyncInProgressError):
        client.sync_portfolio(users[0].user_id)
    assert len(emu.journal) == 0


def test_bad_input_is_refused_before_anything_happens(emu: SnapTradeEmulator) -> None:
    ledger = SQLiteSyncLedger(":memory:")
    with _client(emu, [], ledger) as client:
        for bad in ("", "   ", None, 42):
            with pytest.raises(SnapTradeValidationError):
                client.sync_portfolio(bad)  # type: ignore[arg-type]
        with pytest.raises(SnapTradeValidationError):
            client.mark_from_webhook({"eventType": "ACCOUNT_HOLDINGS_UPDATED"})
    assert len(emu.journal) == 0 and ledger.due_users(1e12, 1e12, None, 10) == []
    for bad_policy in ({"holdings_per_day": 0}, {"activities_per_day": -1}, {"lease_seconds": True}):
        with pytest.raises(SnapTradeValidationError, match="SyncPolicy"):
            SyncPolicy(**bad_policy)  # type: ignore[arg-type]


def test_webhooks_make_exactly_the_changed_data_due(emu: SnapTradeEmulator) -> None:
    users = seed(emu, 2, scenario="self_directed")
    alice, bob = users
    ledger = SQLiteSyncLedger(":memory:")
    with _client(emu, users, ledger) as client:
        for user in users:
            client.sync_portfolio(user.user_id)
        emu.journal.clear()
        margin, ira = alice.account_ids
        client.mark_from_webhook(
            {"eventType": "ACCOUNT_HOLDINGS_UPDATED", "userId": alice.user_id, "accountId": margin}
        )
        client.mark_from_webhook(
            {"eventType": "ACCOUNT_TRANSACTIONS_UPDATED", "userId": alice.user_id, "accountId": ira}
        )
        client.mark_from_webhook(  # SnapTrade's own refresh failed: nothing to fetch
            {
                "eventType": "ACCOUNT_HOLDINGS_UPDATED",
                "userId": bob.user_id,
                "accountId": bob.account_ids[0],
                "details": {"success": False},
            }
        )
        assert client.sync_portfolio(bob.user_id).requests == 0
        snap = client.sync_portfolio(alice.user_id)
        sent = [(e.operation, e.account_id) for e in emu.journal]
        assert sorted(sent) == sorted(
            [
                ("get_user_account_balance", margin),
                ("get_all_account_positions", margin),
                ("get_account_activities", ira),
            ]
        )
        assert {a.account_id: (a.holdings_fetched, a.activities_fetched) for a in snap.accounts} == {
            margin: (True, False),
            ira: (False, True),
        }
        # A broken connection: stale at once, without a request; fixed: listed and fetched again.
        emu.journal.clear()
        event = {"userId": bob.user_id, "brokerageAuthorizationId": bob.authorization_id}
        client.mark_from_webhook({**event, "eventType": "CONNECTION_BROKEN"})
        broken = client.sync_portfolio(bob.user_id)
        assert {a.state for a in broken.accounts} == {AccountState.STALE} and len(emu.journal) == 0
        assert {a.reconnect_authorization_id for a in broken.accounts} == {bob.authorization_id}
        client.mark_from_webhook({**event, "eventType": "CONNECTION_FIXED"})
        fixed = client.sync_portfolio(bob.user_id)
        assert fixed.accounts_listed and {a.state for a in fixed.accounts} == {AccountState.SYNCED}
        assert all(a.holdings_fetched and a.activities_fetched for a in fixed.accounts)


def test_the_async_client_runs_the_same_flow(emu: SnapTradeEmulator) -> None:
    users = seed(emu, 2)

    def shape(snapshot):
        return [(a.account_id, a.state, a.balances, a.positions, a.new_activities) for a in snapshot.accounts]

    with _client(emu, users, SQLiteSyncLedger(":memory:")) as client:
        expected = shape(client.sync_portfolio(users[0].user_id))

    async def run() -> list:
        kw = client_kwargs(emu, secret_store=secrets_of(users), sync_ledger=SQLiteSyncLedger(":memory:"))
        async with AsyncSafeSnapTradeClient(**kw) as aclient:
            return shape(await aclient.sync_portfolio(users[0].user_id))

    assert asyncio.run(run()) == expected


# --- pure properties -------------------------------------------------------------------------------

_DAY0 = date(2026, 1, 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), max_size=6), min_size=1, max_size=8))
def test_the_cursor_reports_every_activity_exactly_once(rounds: list[list[int]]) -> None:
    """Activities arrive in date order (same-day additions included) between syncs; each sync
    fetches from the cursor day (inclusive, as SnapTrade's startDate) and reports only the
    activities whose ids the cursor has not seen, exactly as the flow does."""
    server: list[Activity] = []
    reported: list[str] = []
    cursor: str | None = None
    seen: tuple[str, ...] = ()
    newest = 0
    for batch in rounds:
        for step in batch:
            newest += step
            day = datetime.combine(_DAY0 + timedelta(days=newest), datetime.min.time(), UTC)
            server.append(Activity(id=f"a{len(server)}", trade_date=day))
        start = date.fromisoformat(cursor) if cursor else None
        fetched = [a for a in server if start is None or a.trade_date.date() >= start]  # type: ignore[union-attr]
        reported.extend(a.id for a in fetched if a.id not in seen)  # type: ignore[misc]
        moved = _advance(cursor, fetched)
        cursor, seen = moved.get("activities_cursor", cursor), moved.get("cursor_ids", seen)
    print(f"cursor property: {len(rounds)} rounds, {len(server)} activities")
    assert sorted(reported) == sorted(a.id for a in server)  # type: ignore[type-var]
    assert len(reported) == len(set(reported))


EVENTS = {
    "ACCOUNT_HOLDINGS_UPDATED": LedgerChange.HOLDINGS_DIRTY,
    "ACCOUNT_TRANSACTIONS_UPDATED": LedgerChange.ACTIVITIES_DIRTY,
    "ACCOUNT_TRANSACTIONS_INITIAL_UPDATE": LedgerChange.ACTIVITIES_DIRTY,
    "ACCOUNT_REMOVED": LedgerChange.ACCOUNT_REMOVED,
    "NEW_ACCOUNT_AVAILABLE": LedgerChange.ACCOUNTS_DIRTY,
    "CONNECTION_BROKEN": LedgerChange.CONNECTION_BROKEN,
    "CONNECTION_FIXED": LedgerChange.CONNECTION_FIXED,
    "CONNECTION_DELETED": LedgerChange.CONNECTION_REMOVED,
    "USER_DELETED": LedgerChange.USER_REMOVED,
}
_ids = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(EVENTS)), _ids, _ids, _ids, st.sampled_from(["upper", "lower"]))
def test_webhook_events_map_to_their_mark(event_type: str, user: str, account: str, connection: str, case: str) -> None:
    payload = {
        "eventType": getattr(event_type, case)(),
        "userId": user,
        "accountId": account,
        "brokerageAuthorizationId": connection,
        "webhookId": "w",
    }
    [mark] = ledger_marks(payload)
    assert (mark.user_id, mark.change) == (user, EVENTS[event_type])
    if mark.change in (LedgerChange.HOLDINGS_DIRTY, LedgerChange.ACTIVITIES_DIRTY, LedgerChange.ACCOUNT_REMOVED):
        assert mark.account_id == account
    if mark.change.name.startswith("CONNECTION"):
        assert mark.connection_id == connection


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(EVENTS)), _ids, _ids, _ids)
def test_typed_webhook_events_mark_like_their_payload(
    event_type: str, user: str, account: str, connection: str
) -> None:
    """The webhooks package's typed events give the same marks as the raw payload."""
    from aims_snaptrade.webhooks import parse_event

    payload = {
        "webhookId": "w1",
        "eventType": event_type,
        "eventTimestamp": "2026-11-30T10:00:00Z",
        "userId": user,
        "accountId": account,
        "brokerageAuthorizationId": connection,
    }
    assert ledger_marks(parse_event(payload)) == ledger_marks(payload)


@settings(max_examples=100, deadline=None)
@given(_ids.map(str.upper), _ids)
def test_other_event_types_mark_nothing(event_type: str, user: str) -> None:
    if event_type in EVENTS or event_type in ("CONNECTION_ADDED", "CONNECTION_UPDATED"):
        return
    assert ledger_marks({"eventType": event_type, "userId": user}) == []
