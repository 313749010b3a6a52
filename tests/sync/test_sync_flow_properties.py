"""``sync_portfolio``'s flow against docs/portfolio-sync.md, on a fake SnapTrade (sync_flow_harness.py).

* What one user sync fetches is exactly what the policy says is due (or everything, forced), in
  one listing and per-account reads; what it learnt is written back and clears the marks it covers.
* The activities cursor: the next fetch starts ON the newest trade date seen (``startDate`` is
  inclusive), so activities booked later that day are reported, and none is reported twice.
* Per-account failures are states of their account, never the user's failure; failures before
  any account fail the user and free the lease.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_flow_harness import ACTIVITIES, HOLDINGS, LISTING, Broker, Clock, activity, flow_clock, run

from aims_snaptrade import errors as e
from aims_snaptrade.models import Activity
from aims_snaptrade.pipeline import CallOptions, Send
from aims_snaptrade.sync import (
    AccountState,
    AccountStatus,
    AccountUpdate,
    LedgerChange,
    SQLiteSyncLedger,
    SyncOutcome,
    SyncPolicy,
    sync_portfolio,
)
from aims_snaptrade.sync.flow import MAX_ROUNDS
from aims_snaptrade.sync.records import UserRecord

USER = "user-1"
DAY0 = date(2026, 3, 1)


# --- the activities cursor ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2), max_size=5), min_size=1, max_size=6), st.booleans())
def test_every_activity_is_reported_exactly_once_and_the_fetch_resumes_on_the_cursor_day(
    rounds: list[list[int]], by_webhook: bool
) -> None:
    """Activities arrive between syncs, later ones on the same day as the newest seen or after it.
    Each incremental sync fetches from the cursor day (inclusive) and only that; every activity is
    reported in ``new_activities`` once, in the sync after it arrived."""
    clock = Clock()
    broker = Broker({"acct": "conn"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    policy = SyncPolicy()
    newest, count = 0, 0
    with flow_clock(clock):
        for number, steps in enumerate(rounds):
            arrived = []
            for step in steps:
                newest += step
                arrived.append(activity(f"x{count}", DAY0 + timedelta(days=newest), hour=count % 24))
                count += 1
            broker.activities["acct"].extend(arrived)
            before = ledger.load_user(USER)
            cursor = before.accounts[0].activities_cursor if before else None
            if number:
                if by_webhook:  # ACCOUNT_TRANSACTIONS_UPDATED
                    ledger.mark(USER, LedgerChange.ACTIVITIES_DIRTY, clock.now, account_id="acct")
                    clock.tick()
                else:  # a day later: activities are due by the clock (and holdings with them)
                    clock.tick(policy.activities_interval)
            broker.sent.clear()
            snapshot = run(sync_portfolio(broker, USER, policy=policy), ledger)  # type: ignore[arg-type]
            [account] = snapshot.accounts
            assert account.activities_fetched
            assert sorted(a.id for a in account.new_activities) == sorted(a.id for a in arrived)  # type: ignore[misc]
            starts = [start for op, _, start in broker.sent if op == ACTIVITIES]
            assert starts == [None if cursor is None else date.fromisoformat(cursor)]
            if number and by_webhook:
                assert broker.operations() == [ACTIVITIES]  # only what the mark made due
            after = ledger.load_user(USER)
            assert after is not None
            if count:
                newest_day = (DAY0 + timedelta(days=newest)).isoformat()
                on_newest = sorted(
                    a.id for a in broker.activities["acct"] if a.trade_date.date().isoformat() == newest_day
                )  # type: ignore[union-attr,misc]
                assert (after.accounts[0].activities_cursor, list(after.accounts[0].cursor_ids)) == (
                    newest_day,
                    on_newest,
                )
            else:
                assert (after.accounts[0].activities_cursor, after.accounts[0].cursor_ids) == (None, ())
    ledger.close()


def test_an_activity_booked_later_on_the_cursor_day_is_reported() -> None:
    """The issue's bug class: resuming from the day after the cursor misses it."""
    clock = Clock()
    broker = Broker({"acct": "conn"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    day = date(2026, 5, 4)
    broker.activities["acct"] = [activity("old", day - timedelta(days=3)), activity("morning", day, hour=9)]
    with flow_clock(clock):
        first = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
        assert [a.id for a in first.accounts[0].new_activities] == ["old", "morning"]
        broker.activities["acct"].append(activity("afternoon", day, hour=15))
        broker.activities["acct"].append(activity(None, day, hour=16))  # no id: never dropped
        ledger.mark(USER, LedgerChange.ACTIVITIES_DIRTY, clock.now, account_id="acct")
        clock.tick()
        broker.sent.clear()
        second = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.sent == [(ACTIVITIES, "acct", day)]
    assert [a.id for a in second.accounts[0].new_activities] == ["afternoon", None]
    record = ledger.load_user(USER)
    assert record is not None
    assert (record.accounts[0].activities_cursor, record.accounts[0].cursor_ids) == (
        "2026-05-04",
        ("afternoon", "morning"),
    )
    ledger.close()


def test_activities_without_a_trade_date_leave_the_cursor_alone() -> None:
    clock = Clock()
    broker = Broker({"acct": "conn"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    broker.activities["acct"] = [activity("dated", date(2026, 1, 2))]
    with flow_clock(clock):
        run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
        broker.activities["acct"].append(Activity(id="undated"))
        clock.tick(SyncPolicy().activities_interval)
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert [a.id for a in snapshot.accounts[0].new_activities] == ["undated"]
    record = ledger.load_user(USER)
    assert record is not None
    assert (record.accounts[0].activities_cursor, record.accounts[0].cursor_ids) == ("2026-01-02", ("dated",))
    ledger.close()


# --- what one sync fetches is what is due ------------------------------------------------------

_RATES = st.sampled_from([1, 4, 24])
_AGE = st.one_of(
    st.none(),
    st.sampled_from([("now", 1), ("holdings", -1), ("holdings", 0), ("activities", -1), ("activities", 0)]),
)
_MARK = st.sampled_from([False, False, True])
# active: listed and enabled; stale: the ledger has it stale and its connection is still disabled;
# repaired: stale in the ledger, enabled again at SnapTrade; gone: gone in the ledger and not listed;
# removed: active in the ledger, no longer listed; new: listed, not in the ledger yet; moved: listed
# under another connection than the ledger's; orphan: listed without a connection id.
_KINDS = ["active", "active", "active", "stale", "repaired", "gone", "removed", "new", "moved", "orphan"]
_ACCOUNT = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(_KINDS),
        "holdings_ago": _AGE,
        "activities_ago": _AGE,
        "holdings_mark": _MARK,
        "activities_mark": _MARK,
        "cursor": st.sampled_from([None, "2026-02-27"]),
    }
)


def _at(policy: SyncPolicy, now: float, age: tuple[str, int] | None) -> float | None:
    if age is None:
        return None
    clock, offset = age
    interval = {"now": 0.0, "holdings": policy.holdings_interval, "activities": policy.activities_interval}[clock]
    return now - (interval + offset)


def _setup(
    ledger: SQLiteSyncLedger, broker: Broker, policy: SyncPolicy, now: float, listed_ago: Any, accounts: list[dict]
) -> None:
    """The ledger and SnapTrade as ``accounts`` describe them, written as syncs and webhooks would."""
    long_ago = now - 10 * 86_400
    updates, statuses = [], []
    for i, spec in enumerate(accounts):
        account_id, connection = f"a{i}", _connection(i, spec["kind"])
        kind = spec["kind"]
        if kind not in ("gone", "removed"):
            broker.accounts[account_id] = connection
        if kind == "moved":
            connection = f"old-{i}"
        # The activity the cursor has seen is still at SnapTrade, on the cursor day.
        seen = spec["cursor"] and kind != "new"
        broker.activities[account_id] = [activity("seen", date.fromisoformat(spec["cursor"]))] if seen else []
        if kind == "stale":
            broker.disabled.add(connection)
        if kind == "new":
            continue
        updates.append(
            AccountUpdate(
                account_id,
                connection,
                AccountStatus.ACTIVE,
                _at(policy, now, spec["holdings_ago"]),
                _at(policy, now, spec["activities_ago"]),
                spec["cursor"],
                ("seen",) if spec["cursor"] else None,
            )
        )
        if kind in ("stale", "repaired", "gone"):
            status = AccountStatus.GONE if kind == "gone" else AccountStatus.STALE
            statuses.append(AccountUpdate(account_id, connection, status))
    ledger.save_sync(SyncOutcome(USER, long_ago, long_ago, _at(policy, now, listed_ago), tuple(updates)))
    for i, spec in enumerate(accounts):
        if spec["kind"] == "new":
            continue
        if spec["holdings_mark"]:
            ledger.mark(USER, LedgerChange.HOLDINGS_DIRTY, now - 1, account_id=f"a{i}")
        if spec["activities_mark"]:
            ledger.mark(USER, LedgerChange.ACTIVITIES_DIRTY, now - 1, account_id=f"a{i}")
    if statuses:
        ledger.save_sync(SyncOutcome(USER, long_ago, long_ago, None, tuple(statuses)))


def _connection(i: int, kind: str) -> str | None:
    """Account ``a<i>``'s connection at SnapTrade: digits, which the listing may answer as a number."""
    return None if kind == "orphan" else str(100 + i)


def _expected(policy: SyncPolicy, record: UserRecord, accounts: list[dict], now: float, force: bool) -> dict:
    """What docs/portfolio-sync.md says this sync does, per account: ``(state, holdings, activities)``,
    and each account's connection afterwards (the listing's, when listed)."""
    listing = force or policy.accounts_due(record, now)
    plan: dict[str, tuple[AccountState, bool, bool]] = {}
    connections: dict[str, str | None] = {}
    for i, spec in enumerate(accounts):
        account_id, kind = f"a{i}", spec["kind"]
        previous = record.account(account_id)
        connections[account_id] = f"old-{i}" if kind == "moved" and not listing else _connection(i, kind)
        if kind == "gone" or (kind == "new" and not listing):
            continue  # never fetched, not in the snapshot
        if kind == "stale" or (kind == "repaired" and not listing):
            plan[account_id] = (AccountState.STALE, False, False)
        elif kind == "removed" and listing:
            plan[account_id] = (AccountState.GONE, False, False)
        elif kind in ("new", "repaired"):  # unknown, or back from a disabled connection: everything
            plan[account_id] = (AccountState.SYNCED, True, True)
        else:
            holdings = force or policy.holdings_due(previous, now)
            activities = force or policy.activities_due(previous, now)
            plan[account_id] = (
                AccountState.SYNCED if holdings or activities else AccountState.NOT_DUE,
                holdings,
                activities,
            )
    return {"listing": listing, "accounts": plan, "connections": connections}


def _answered(numeric: bool, junk: bool) -> Any:
    """The connections' listing as SnapTrade may answer it: numeric ids, entries to ignore."""

    def answer(body: list[dict[str, Any]]) -> Any:
        out: list[Any] = [{**c, "id": int(c["id"])} if numeric else c for c in body]
        if junk:  # not a connection, no id, an empty id: none of them disables anything
            out = ["junk", {"disabled": True}, {"id": "", "disabled": True}, *out, None]
        return out

    return answer


@settings(max_examples=120, deadline=None)
@given(
    _RATES,
    _RATES,
    _AGE,
    st.booleans(),
    st.lists(_ACCOUNT, max_size=4),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_a_sync_fetches_exactly_what_is_due_and_records_it(
    holdings_rate: int,
    activities_rate: int,
    listed_ago: Any,
    listing_mark: bool,
    accounts: list[dict],
    force: bool,
    numeric: bool,
    junk: bool,
) -> None:
    policy = SyncPolicy(holdings_per_day=holdings_rate, activities_per_day=activities_rate)
    clock = Clock()
    now = clock.now
    broker = Broker({}, clock)
    broker.authorizations = _answered(numeric, junk)
    ledger = SQLiteSyncLedger(":memory:")
    _setup(ledger, broker, policy, now, listed_ago, accounts)
    if listing_mark:
        ledger.mark(USER, LedgerChange.ACCOUNTS_DIRTY, now - 1)
    before = ledger.load_user(USER)
    assert before is not None
    plan = _expected(policy, before, accounts, now, force)

    options = CallOptions(timeout=7.0)
    with flow_clock(clock):
        snapshot = run(sync_portfolio(broker, USER, policy=policy, force=force, options=options), ledger)  # type: ignore[arg-type]
    assert broker.asked == [(USER, options)] * len(broker.sent)  # every request for the user, with its options

    # The requests: the listing first when due, then each account's due reads, in account id order.
    requests: list[tuple[str, str | None, date | None]] = (
        [(op, None, None) for op in LISTING] if plan["listing"] else []
    )
    for account_id, (_, holdings, activities) in sorted(plan["accounts"].items()):
        previous = before.account(account_id)
        cursor = previous.activities_cursor if previous else None
        requests += [(op, account_id, None) for op in HOLDINGS] if holdings else []
        requests += [(ACTIVITIES, account_id, date.fromisoformat(cursor) if cursor else None)] if activities else []
    assert broker.sent == requests
    assert snapshot.requests == len(requests)

    # The snapshot says what happened to each account.
    assert snapshot.user_id == USER and snapshot.accounts_listed is plan["listing"]
    assert snapshot.started_at == datetime.fromtimestamp(now, UTC)
    assert snapshot.finished_at == datetime.fromtimestamp(clock.now, UTC)
    assert [a.account_id for a in snapshot.accounts] == sorted(plan["accounts"])
    for account in snapshot.accounts:
        state, holdings, activities = plan["accounts"][account.account_id]
        assert (account.state, account.holdings_fetched, account.activities_fetched) == (state, holdings, activities)
        assert account.connection_id == plan["connections"][account.account_id]
        assert (account.balances is not None, account.positions is not None) == (holdings, holdings)
        assert (account.account is not None) is (plan["listing"] and state is not AccountState.GONE)
        assert account.reconnect_authorization_id == (account.connection_id if state is AccountState.STALE else None)
        assert account.error is None and account.new_activities == []

    # The ledger learnt it: fetched kinds stamped with the sync's start and their marks cleared.
    after = ledger.load_user(USER)
    assert after is not None
    assert after.accounts_synced_at == (now if plan["listing"] else before.accounts_synced_at)
    assert after.dirty_at == (None if plan["listing"] else before.dirty_at)
    assert after.last_synced_at == clock.now  # when the sync finished
    for account_id, (state, holdings, activities) in plan["accounts"].items():
        row, old = after.account(account_id), before.account(account_id)
        assert row is not None
        status = {AccountState.STALE: AccountStatus.STALE, AccountState.GONE: AccountStatus.GONE}
        assert row.status is status.get(state, AccountStatus.ACTIVE)
        # A listing's connection id replaces the ledger's; none (an orphan) leaves it.
        assert row.connection_id == plan["connections"][account_id]
        assert row.holdings_synced_at == (now if holdings else old.holdings_synced_at if old else None)
        assert row.activities_synced_at == (now if activities else old.activities_synced_at if old else None)
        if holdings:
            assert row.holdings_dirty_at is None
        if activities:
            assert row.activities_dirty_at is None
        if old is not None:
            assert (row.activities_cursor, row.cursor_ids) == (old.activities_cursor, old.cursor_ids)
    # Nothing is left half-held: another worker may take the user at once.
    assert ledger.acquire_lease(USER, "next-worker", clock.now, clock.now + 60)
    ledger.close()


# --- failures ------------------------------------------------------------------------------------

_ERRORS = {
    "disabled": (lambda: e.SnapTradeConnectionDisabledError("disabled", status=402, code="3003"), AccountState.STALE),
    "populating": (lambda: e.SnapTradeDataNotReadyError("importing", status=425, code="3012"), AccountState.POPULATING),
    "retired": (lambda: e.SnapTradeEndpointRetiredError("retired", status=410), AccountState.RETIRED),
    "failed": (lambda: e.SnapTradeServerError("boom", status=500, request_id="req-1"), AccountState.FAILED),
}
_READS = [*HOLDINGS, ACTIVITIES]


def _synced_twice(clock: Clock) -> tuple[Broker, SQLiteSyncLedger]:
    """Two accounts of one user, fully synced once, then a day later, when everything is due again."""
    broker = Broker({"a0": "c0", "a1": "c1"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    clock.tick(86_400)
    broker.sent.clear()
    return broker, ledger


@pytest.mark.parametrize("failing", _READS)
@pytest.mark.parametrize("kind", sorted(_ERRORS))
def test_a_failing_read_is_a_state_of_its_account_and_decides_the_next_sync(kind: str, failing: str) -> None:
    """docs/portfolio-sync.md, "Per-account failures are states": the other account is synced, the
    user's sync does not fail; what was fetched before the failure is kept; the next sync fetches
    again what failed (stale: nothing until repaired; retired: not before the interval)."""
    make, state = _ERRORS[kind]
    clock = Clock()
    with flow_clock(clock):
        broker, ledger = _synced_twice(clock)
        started = clock.now
        first = ledger.load_user(USER)
        assert first is not None and first.accounts[0].holdings_synced_at is not None
        earlier = first.accounts[0].holdings_synced_at
        broker.failures[(failing, "a0")] = make()
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
        holdings_retired = kind == "retired" and failing in HOLDINGS  # recorded; activities go on
        reads = _READS[: _READS.index(failing) + 1]
        if holdings_retired:
            reads = [*reads, ACTIVITIES]
        assert broker.operations("a0") == reads
        assert broker.operations("a1") == _READS
        assert broker.operations()[:2] == list(LISTING)
        a0, a1 = snapshot.accounts
        assert a1.state is AccountState.SYNCED and a1.holdings_fetched and a1.activities_fetched
        assert a0.state is state
        assert snapshot.ok is (kind != "failed")
        assert a0.holdings_fetched is (failing == ACTIVITIES)
        assert a0.activities_fetched is holdings_retired
        # What was fetched before the failure is in the snapshot; a retired holdings read has none.
        balances_kept = failing != HOLDINGS[0] and not holdings_retired
        assert (a0.balances is not None, a0.positions is not None) == (balances_kept, failing == ACTIVITIES)
        if holdings_retired:
            assert a0.error is None
        else:
            assert a0.error is not None
            assert (a0.error.type, a0.error.status) == (
                type(broker.failures[(failing, "a0")]).__name__,
                a0.error.status,
            )
            assert a0.error.status == {"disabled": 402, "populating": 425, "retired": 410, "failed": 500}[kind]
        assert a0.reconnect_authorization_id == ("c0" if kind == "disabled" else None)

        record = ledger.load_user(USER)
        assert record is not None
        row = record.account("a0")
        assert row is not None
        assert row.status is (AccountStatus.STALE if kind == "disabled" else AccountStatus.ACTIVE)
        holdings_kept = kind == "retired" or (failing == ACTIVITIES and kind != "disabled")
        activities_kept = kind == "retired"
        assert row.holdings_synced_at == (started if holdings_kept else earlier)
        assert row.activities_synced_at == (started if activities_kept else earlier)

        # The next sync, a second later and with SnapTrade fine again.
        broker.failures.clear()
        broker.sent.clear()
        clock.tick()
        again = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    expected = (
        []
        if kind == "disabled"
        else [*(() if holdings_kept else HOLDINGS), *(() if activities_kept else (ACTIVITIES,))]
    )
    assert broker.operations("a0") == expected
    assert broker.operations("a1") == []
    assert again.accounts[0].state is (
        AccountState.STALE if kind == "disabled" else AccountState.SYNCED if expected else AccountState.NOT_DUE
    )
    ledger.close()


def test_a_listing_failure_fails_the_user_frees_the_lease_and_writes_nothing() -> None:
    clock = Clock()
    with flow_clock(clock):
        broker, ledger = _synced_twice(clock)
        before = ledger.load_user(USER)
        broker.failures[("list_all_user_accounts", None)] = e.SnapTradeAuthError("refused", status=401)
        with pytest.raises(e.SnapTradeAuthError):
            run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.operations() == list(LISTING)
    assert ledger.load_user(USER) == before
    assert ledger.acquire_lease(USER, "next-worker", clock.now, clock.now + 60)
    ledger.close()


def test_an_unknown_user_refused_before_any_request_leaves_no_row() -> None:
    """An erased person named by a late task: no secret (refused before sending), no ledger row."""
    clock = Clock()
    broker = Broker({"a0": "c0"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    broker.refuse = e.SnapTradeNotFoundError("no secret for this user")
    with flow_clock(clock), pytest.raises(e.SnapTradeNotFoundError):
        run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert ledger.load_user(USER) is None
    assert ledger.due_users(clock.now, clock.now, None, 10) == []
    ledger.close()


@pytest.mark.parametrize("case", ["known user", "404 after a request", "a webhook named the user"])
def test_a_not_found_user_the_ledger_knows_keeps_its_rows_and_frees_the_lease(case: str) -> None:
    clock = Clock()
    broker = Broker({"a0": "c0"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    with flow_clock(clock):
        if case == "known user":
            run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
            clock.tick(86_400)
            broker.refuse = e.SnapTradeNotFoundError("no secret for this user")
        elif case == "404 after a request":
            broker.failures[("list_brokerage_authorizations", None)] = e.SnapTradeNotFoundError("no user", status=404)
        else:
            ledger.mark(USER, LedgerChange.ACCOUNTS_DIRTY, clock.now - 1)
            broker.refuse = e.SnapTradeNotFoundError("no secret for this user")
        before = ledger.load_user(USER)
        with pytest.raises(e.SnapTradeNotFoundError):
            run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    record = ledger.load_user(USER)
    assert record is not None
    if before is not None:
        assert record == before
    assert ledger.acquire_lease(USER, "next-worker", clock.now, clock.now + 60)
    ledger.close()


def test_a_held_user_is_refused_before_anything_and_keeps_its_holder() -> None:
    clock = Clock()
    broker = Broker({"a0": "c0"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    ledger.mark(USER, LedgerChange.ACCOUNTS_DIRTY, clock.now - 1)
    assert ledger.acquire_lease(USER, "holder", clock.now, clock.now + SyncPolicy().lease_seconds)
    with (
        flow_clock(clock),
        pytest.raises(e.SnapTradeSyncInProgressError, match=f"Another worker is syncing user '{USER}'"),
    ):
        run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.sent == []
    assert not ledger.acquire_lease(USER, "third", clock.now + 1, clock.now + 2)
    ledger.close()


def test_the_lease_is_taken_for_lease_seconds_by_the_named_owner() -> None:
    clock = Clock()
    broker = Broker({"a0": "c0"}, clock)
    seen: list[tuple[Any, ...]] = []

    class Watching(SQLiteSyncLedger):
        def acquire_lease(self, user_id: str, owner: str, now: float, until: float) -> bool:
            seen.append((user_id, owner, now, until))
            return super().acquire_lease(user_id, owner, now, until)

    ledger = Watching(":memory:")
    with flow_clock(clock):
        run(sync_portfolio(broker, USER, policy=SyncPolicy(lease_seconds=42), lease_owner="batch-7"), ledger)  # type: ignore[arg-type]
        run(sync_portfolio(broker, USER, policy=SyncPolicy(lease_seconds=42)), ledger)  # type: ignore[arg-type]
    (user, owner, now, until), (_, fresh, _, _) = seen
    assert (user, owner, until - now) == (USER, "batch-7", 42)
    assert len(fresh) == 32 and fresh != owner  # a fresh id by default
    ledger.close()


def test_a_cancelled_sync_leaves_its_lease_to_expire() -> None:
    """Closed unfinished (a cancelled task): nothing more is done, the lease expires by itself."""
    clock = Clock()
    broker = Broker({"a0": "c0"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    flow = sync_portfolio(broker, USER, policy=SyncPolicy(lease_seconds=60))  # type: ignore[arg-type]
    with flow_clock(clock):
        effect = flow.send(None)
        while not isinstance(effect, Send):
            effect = flow.send(getattr(ledger, effect.method)(*effect.args))
        flow.close()
    assert not ledger.acquire_lease(USER, "next-worker", clock.now, clock.now + 1)
    assert ledger.acquire_lease(USER, "next-worker", clock.now + 60, clock.now + 61)
    ledger.close()


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"user_id": ""}, "user_id must be a non-empty string, got str"),
        ({"user_id": "  "}, "user_id must be a non-empty string, got str"),
        ({"user_id": 7}, "user_id must be a non-empty string, got int"),
        ({"policy": {"holdings_per_day": 4}}, "policy must be a SyncPolicy, got dict"),
        ({"force": 1}, "force must be True or False, got int"),
        ({"force": "yes"}, "force must be True or False, got str"),
    ],
)
def test_bad_arguments_are_refused_before_anything(arguments: dict[str, Any], says: str) -> None:
    clock = Clock()
    broker = Broker({"a0": "c0"}, clock)
    ledger = SQLiteSyncLedger(":memory:")
    call = {"user_id": USER, "policy": SyncPolicy(), "force": False, **arguments}
    flow = sync_portfolio(broker, call.pop("user_id"), **call)  # type: ignore[arg-type]
    with pytest.raises(e.SnapTradeValidationError) as caught:
        run(flow, ledger)
    assert caught.value.message == says + "."
    assert broker.sent == [] and ledger.load_user(USER) is None
    ledger.close()


# --- marks made during the sync ------------------------------------------------------------------


class _Webhooks:
    """Marks the ledger when the broker sends the ``n``-th request (1-based), as a webhook handler
    in another process would while the sync runs; ``book`` changes SnapTrade's activities first:
    ``(account, activities)`` books them, ``(account, activities, id)`` replaces the one with ``id``."""

    def __init__(self, ledger: SQLiteSyncLedger, broker: Broker, clock: Clock) -> None:
        self.ledger, self.broker, self.clock = ledger, broker, clock
        self.plan: dict[int, list[tuple[LedgerChange, str | None]]] = {}
        self.book: dict[int, tuple[Any, ...]] = {}
        broker.on_send = self._on_send

    def _on_send(self, operation: str, account_id: str | None) -> None:
        n = len(self.broker.sent)
        if n in self.book:
            account, new, *replaced = self.book[n]
            kept = [a for a in self.broker.activities[account] if not replaced or a.id != replaced[0]]
            self.broker.activities[account] = kept + list(new)
        for change, account in self.plan.get(n, []):
            self.ledger.mark(USER, change, self.clock.now, account_id=account)


def _first_sync(clock: Clock, accounts: dict[str, str]) -> tuple[Broker, SQLiteSyncLedger]:
    broker = Broker(accounts, clock)
    ledger = SQLiteSyncLedger(":memory:")
    for account in accounts:
        broker.activities[account] = [activity(f"{account}-old", DAY0)]
    run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    clock.tick()
    broker.sent.clear()
    return broker, ledger


_ROUNDS = {
    # name: (marks before, marks during request 2, second round's requests)
    "holdings of another account": (
        [(LedgerChange.HOLDINGS_DIRTY, "a1"), (LedgerChange.ACTIVITIES_DIRTY, "a1")],
        [(LedgerChange.HOLDINGS_DIRTY, {"account_id": "a0"})],
        [(op, "a0") for op in HOLDINGS],
    ),
    "new activities": (
        [(LedgerChange.HOLDINGS_DIRTY, "a1"), (LedgerChange.ACTIVITIES_DIRTY, "a1")],
        [(LedgerChange.ACTIVITIES_DIRTY, {"account_id": "a1"})],
        [(ACTIVITIES, "a1")],
    ),
    "holdings after activities": (
        [(LedgerChange.ACTIVITIES_DIRTY, "a1")],
        [(LedgerChange.HOLDINGS_DIRTY, {"account_id": "a1"})],
        [(op, "a1") for op in HOLDINGS],
    ),
    "holdings of the same account again": (
        [(LedgerChange.HOLDINGS_DIRTY, "a1"), (LedgerChange.ACTIVITIES_DIRTY, "a1")],
        [(LedgerChange.HOLDINGS_DIRTY, {"account_id": "a1"})],
        [(op, "a1") for op in HOLDINGS],
    ),
    "a new account": (
        [(LedgerChange.HOLDINGS_DIRTY, "a1"), (LedgerChange.ACTIVITIES_DIRTY, "a1")],
        [(LedgerChange.ACCOUNTS_DIRTY, {})],
        [*((op, None) for op in LISTING), *((op, "a2") for op in (*HOLDINGS, ACTIVITIES))],
    ),
    "a connection repaired": (
        [(LedgerChange.HOLDINGS_DIRTY, "a1"), (LedgerChange.ACTIVITIES_DIRTY, "a1")],
        [(LedgerChange.CONNECTION_FIXED, {"connection_id": "c-never-seen"})],
        [(op, None) for op in LISTING],
    ),
}


@pytest.mark.parametrize("name", sorted(_ROUNDS))
def test_a_mark_made_during_the_sync_is_synced_in_another_round_and_merged(name: str) -> None:
    """docs/portfolio-sync.md: the holder reads the marks again before it releases the lease and
    syncs what was marked after its round started; the snapshot is one: the later round's data
    replaces, activities add up, what only the first round fetched stays."""
    before, during, second_round = _ROUNDS[name]
    clock = Clock()
    with flow_clock(clock):
        broker, ledger = _first_sync(clock, {"a0": "c0", "a1": "c1"})
        for change, account in before:
            ledger.mark(USER, change, clock.now - 1, account_id=account)
        broker.on_send = lambda op, acct: _during(broker, ledger, clock, name, during)
        released: list[int] = []
        release = ledger.release_lease
        ledger.release_lease = lambda user, owner: (released.append(len(broker.sent)), release(user, owner))  # type: ignore[method-assign]
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert released == [len(broker.sent)]  # the lease was held through both rounds, released once at the end
    first_round = [(op, "a1") for op in ((ACTIVITIES,) if len(before) == 1 else (*HOLDINGS, ACTIVITIES))]
    assert [(op, acct) for op, acct, _ in broker.sent] == first_round + second_round
    assert snapshot.requests == len(broker.sent)
    assert snapshot.started_at == datetime.fromtimestamp(clock.now - len(broker.sent), UTC)
    assert snapshot.accounts_listed is any(op == LISTING[0] for op, _ in second_round)
    a0, a1, *new = snapshot.accounts
    # a1: fetched in the first round; what the second round fetched replaces, activities add up.
    assert a1.state is AccountState.SYNCED and a1.holdings_fetched and a1.activities_fetched
    assert a1.balances is not None
    fetched_at = {"holdings after activities": 2, "holdings of the same account again": 4}.get(name, 1)
    assert a1.balances[0].cash == fetched_at  # the request that fetched the latest balances
    reported = {"new activities": ["a1-booked", "a1-new"]}.get(name, ["a1-booked"])
    assert [a.id for a in a1.new_activities] == reported
    if name == "holdings of another account":
        assert a0.state is AccountState.SYNCED and a0.holdings_fetched and not a0.activities_fetched
        assert a0.balances is not None and a0.balances[0].cash == 4  # the second round's
    else:
        assert a0.state is AccountState.NOT_DUE and a0.balances is None and not a0.holdings_fetched
    if name == "a new account":
        [a2] = new
        assert a2.state is AccountState.SYNCED and a2.holdings_fetched and a2.activities_fetched
    else:
        assert new == []
    record = ledger.load_user(USER)
    assert record is not None and record.dirty_at is None
    assert all(r.holdings_dirty_at is None and r.activities_dirty_at is None for r in record.accounts)
    assert ledger.acquire_lease(USER, "next-worker", clock.now, clock.now + 1)
    ledger.close()


def _during(broker: Broker, ledger: SQLiteSyncLedger, clock: Clock, name: str, marks: list[Any]) -> None:
    """At the first request an activity is booked on a1; at the second (the first, when the first
    round has only one), the webhooks of ``name``."""
    if len(broker.sent) == 1:
        broker.activities["a1"].append(activity("a1-booked", DAY0, hour=17))
    if len(broker.sent) != (1 if name == "holdings after activities" else 2):
        return
    if name == "new activities":
        broker.activities["a1"].append(activity("a1-new", DAY0, hour=18))
    if name == "a new account":
        broker.accounts["a2"] = "c2"
        broker.activities["a2"] = []
    for change, target in marks:
        ledger.mark(USER, change, clock.now, **target)


def test_rounds_merge_activities_without_repeating_one_and_keep_the_first_rounds_holdings() -> None:
    """An activity SnapTrade amends between the rounds (its trade date moved past the cursor) is
    reported again by the second round: the merged snapshot has it once, as amended."""
    clock = Clock()
    with flow_clock(clock):
        broker, ledger = _first_sync(clock, {"a0": "c0"})
        ledger.mark(USER, LedgerChange.HOLDINGS_DIRTY, clock.now - 1, account_id="a0")
        ledger.mark(USER, LedgerChange.ACTIVITIES_DIRTY, clock.now - 1, account_id="a0")
        hooks = _Webhooks(ledger, broker, clock)
        booked = [
            activity("x", DAY0, hour=10),
            activity("y", DAY0 + timedelta(days=1)),
            activity(None, DAY0 + timedelta(days=1)),
        ]
        amended = activity("x", DAY0 + timedelta(days=2))
        hooks.book[3] = ("a0", booked)  # round 1: holdings, holdings, activities (x, y and an id-less one)
        hooks.plan[3] = [(LedgerChange.ACTIVITIES_DIRTY, "a0")]
        hooks.book[4] = ("a0", [amended], "x")  # round 2's activities: x was moved two days on
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert [(op, start) for op, _, start in broker.sent] == [
        (HOLDINGS[0], None),
        (HOLDINGS[1], None),
        (ACTIVITIES, DAY0),
        (ACTIVITIES, DAY0 + timedelta(days=1)),
    ]
    [a0] = snapshot.accounts
    reported = [(a.id, a.trade_date.date() if a.trade_date else None) for a in a0.new_activities]
    # y and the id-less one from round 1, the id-less one again and the amended x from round 2.
    assert sorted(reported, key=str) == sorted(
        [
            ("y", DAY0 + timedelta(days=1)),
            (None, DAY0 + timedelta(days=1)),
            (None, DAY0 + timedelta(days=1)),
            ("x", DAY0 + timedelta(days=2)),
        ],
        key=str,
    )
    assert a0.holdings_fetched and a0.activities_fetched and a0.balances is not None and a0.positions is not None
    assert a0.balances[0].cash == 1  # the first round's holdings stay: the second fetched none
    ledger.close()


def test_a_user_marked_at_every_round_is_left_to_sync_due_after_max_rounds() -> None:
    clock = Clock()
    with flow_clock(clock):
        broker, ledger = _first_sync(clock, {"a0": "c0"})
        broker.on_send = lambda op, acct: ledger.mark(USER, LedgerChange.HOLDINGS_DIRTY, clock.now, account_id="a0")
        ledger.mark(USER, LedgerChange.HOLDINGS_DIRTY, clock.now - 1, account_id="a0")
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.operations() == list(HOLDINGS) * MAX_ROUNDS
    assert snapshot.requests == 2 * MAX_ROUNDS
    balances = snapshot.accounts[0].balances
    assert balances is not None and balances[0].cash == 2 * MAX_ROUNDS - 1  # the last round's
    assert ledger.due_users(0.0, 0.0, None, 10) == [USER]  # still marked
    assert ledger.acquire_lease(USER, "next-worker", clock.now, clock.now + 1)  # released
    ledger.close()


@pytest.mark.parametrize("taken", [False, True])
def test_a_mark_landing_as_the_lease_is_released_is_taken_up(taken: bool) -> None:
    """Between the holder's last read and its release a second worker gave up; the holder looks once
    more after releasing, and syncs the mark itself unless another worker holds the user by then."""
    clock = Clock()
    marks = {"left": 1}

    class Racing(SQLiteSyncLedger):
        def release_lease(self, user_id: str, owner: str) -> None:
            super().release_lease(user_id, owner)
            if marks["left"]:
                marks["left"] -= 1
                self.mark(USER, LedgerChange.HOLDINGS_DIRTY, clock.now, account_id="a0")
                if taken:
                    assert self.acquire_lease(USER, "other-worker", clock.now, clock.now + 300)

    with flow_clock(clock):
        broker = Broker({"a0": "c0"}, clock)
        ledger = Racing(":memory:")
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    first = [*LISTING, *HOLDINGS, ACTIVITIES]
    assert broker.operations() == (first if taken else [*first, *HOLDINGS])
    assert snapshot.requests == len(broker.sent)
    assert snapshot.accounts_listed  # by the first round
    assert snapshot.accounts[0].activities_fetched and snapshot.accounts[0].balances is not None
    record = ledger.load_user(USER)
    assert record is not None
    assert (record.accounts[0].holdings_dirty_at is not None) is taken  # the other worker's to sync
    assert ledger.acquire_lease(USER, "third", clock.now, clock.now + 1) is not taken
    ledger.close()


def test_marks_that_need_no_fetch_do_not_start_another_round() -> None:
    """A stale account's mark, or a mark older than the round, is not a reason for another round."""
    clock = Clock()
    with flow_clock(clock):
        broker, ledger = _first_sync(clock, {"a0": "c0", "a1": "c1"})
        ledger.mark(USER, LedgerChange.CONNECTION_BROKEN, clock.now - 1, connection_id="c1")
        ledger.mark(USER, LedgerChange.HOLDINGS_DIRTY, clock.now - 1, account_id="a0")
        broker.on_send = lambda op, acct: ledger.mark(USER, LedgerChange.HOLDINGS_DIRTY, clock.now, account_id="a1")
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.operations() == list(HOLDINGS)
    assert [a.state for a in snapshot.accounts] == [AccountState.SYNCED, AccountState.STALE]
    ledger.close()


def test_a_user_forgotten_right_after_its_sync_is_saved_is_not_synced_again() -> None:
    """USER_DELETED lands between the holder's save and its read of the marks: nothing more is
    fetched and the rows stay gone."""
    clock = Clock()

    class Forgetting(SQLiteSyncLedger):
        def save_sync(self, outcome: SyncOutcome) -> None:
            super().save_sync(outcome)
            self.mark(USER, LedgerChange.USER_REMOVED, clock.now)

    broker = Broker({"a0": "c0"}, clock)
    ledger = Forgetting(":memory:")
    with flow_clock(clock):
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.operations() == [*LISTING, *HOLDINGS, ACTIVITIES]
    assert snapshot.requests == 5
    assert ledger.load_user(USER) is None
    ledger.close()


@pytest.mark.parametrize("erasure", ["USER_DELETED", "forget_user"])
def test_a_user_erased_while_its_sync_fetches_is_not_written_back_by_the_save(erasure: str) -> None:
    """The erasure lands after the sync read the ledger and before it saves: the save writes nothing
    back (docs/portfolio-sync.md), whichever way the person was erased."""
    clock = Clock()

    class ErasedMidSync(SQLiteSyncLedger):
        def save_sync(self, outcome: SyncOutcome) -> None:
            if erasure == "USER_DELETED":
                self.mark(USER, LedgerChange.USER_REMOVED, clock.now)
            else:
                self.forget_user(USER)
            super().save_sync(outcome)

    broker = Broker({"a0": "c0"}, clock)
    ledger = ErasedMidSync(":memory:")
    with flow_clock(clock):
        run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.operations() == [*LISTING, *HOLDINGS, ACTIVITIES]  # fetched once, not again
    assert ledger.load_user(USER) is None
    assert ledger.due_users(clock.now + 1e9, clock.now + 1e9, None, 10) == []
    ledger.close()


@pytest.mark.parametrize("state", [AccountState.NOT_DUE, AccountState.STALE])
def test_a_listed_account_takes_its_new_connection_whatever_came_of_it(state: AccountState) -> None:
    """Nothing of it due, or its read finding the new connection disabled: the ledger learns the
    connection the listing shows (the one a reconnect link needs)."""
    clock = Clock()
    with flow_clock(clock):
        broker, ledger = _first_sync(clock, {"a0": "c0"})
        broker.accounts["a0"] = "c-new"  # moved to another connection at SnapTrade
        ledger.mark(USER, LedgerChange.ACCOUNTS_DIRTY, clock.now - 1)
        if state is AccountState.STALE:
            ledger.mark(USER, LedgerChange.HOLDINGS_DIRTY, clock.now - 1, account_id="a0")
            broker.failures[(HOLDINGS[0], "a0")] = e.SnapTradeConnectionDisabledError("disabled", status=402)
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.operations()[:2] == list(LISTING)
    [a0] = snapshot.accounts
    assert (a0.state, a0.connection_id) == (state, "c-new")
    record = ledger.load_user(USER)
    assert record is not None and record.accounts[0].connection_id == "c-new"
    ledger.close()


@pytest.mark.parametrize("change", [LedgerChange.ACCOUNTS_DIRTY, LedgerChange.HOLDINGS_DIRTY])
def test_a_mark_at_the_instant_the_round_started_is_synced_by_the_holder(change: LedgerChange) -> None:
    """A webhook's mark stamped with the very time the round started (a coarse clock, two processes),
    landing after the round read the ledger: it is not in what the round fetched, so the holder
    syncs it ("nothing marked during a sync is left unsynced")."""
    clock = Clock()
    loads = {"n": 0}

    class Racing(SQLiteSyncLedger):
        def load_user(self, user_id: str) -> Any:
            record = super().load_user(user_id)
            loads["n"] += 1
            if loads["n"] == 1:  # right after the round's first read, at the same clock reading
                self.mark(USER, change, clock.now, account_id="a0")
            return record

    with flow_clock(clock):
        broker, _ = _first_sync(clock, {"a0": "c0"})
        ledger = Racing(":memory:")
        ledger.save_sync(
            SyncOutcome(
                USER,
                clock.now - 10,
                clock.now - 9,
                clock.now - 10,
                (AccountUpdate("a0", "c0", AccountStatus.ACTIVE, clock.now - 10, clock.now - 10),),
            )
        )
        run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    expected = list(LISTING) if change is LedgerChange.ACCOUNTS_DIRTY else list(HOLDINGS)
    assert broker.operations() == expected
    record = ledger.load_user(USER)
    assert record is not None and record.dirty_at is None and record.accounts[0].holdings_dirty_at is None
    ledger.close()


def test_the_cursor_ids_are_the_cursor_days_latest_answer() -> None:
    """An activity SnapTrade withdraws from the cursor day leaves the cursor's ids (they are exactly
    that day's in the latest answer); booked again, it is reported again."""
    clock = Clock()
    day = date(2026, 6, 1)
    with flow_clock(clock):
        broker, ledger = _first_sync(clock, {"a0": "c0"})
        broker.activities["a0"] = [activity("x", day)]
        for _ in range(3):
            ledger.mark(USER, LedgerChange.ACTIVITIES_DIRTY, clock.now, account_id="a0")
            clock.tick()
            snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
            record = ledger.load_user(USER)
            assert record is not None
            row = record.accounts[0]
            ids = [a.id for a in broker.activities["a0"]]
            assert (row.activities_cursor, list(row.cursor_ids)) == (day.isoformat(), ids)
            assert [a.id for a in snapshot.accounts[0].new_activities] in ([], ["x"])
            broker.activities["a0"] = [] if ids else [activity("x", day, hour=15)]
    assert [start for op, _, start in broker.sent if op == ACTIVITIES][-2:] == [day, day]
    assert [a.id for a in snapshot.accounts[0].new_activities] == ["x"]  # withdrawn, then booked again
    ledger.close()


@pytest.mark.parametrize("body", [None, {}, "unexpected"])
def test_a_connections_listing_that_is_not_a_list_disables_nothing(body: object) -> None:
    clock = Clock()
    broker = Broker({"a0": "c0"}, clock)
    broker.disabled.add("c0")
    broker.authorizations = lambda listing: body
    ledger = SQLiteSyncLedger(":memory:")
    with flow_clock(clock):
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert [a.state for a in snapshot.accounts] == [AccountState.SYNCED]
    ledger.close()


def test_a_ledger_that_does_not_know_a_new_user_yet_gets_it_synced_whole() -> None:
    """``load_user`` may answer ``None`` for a user it does not know (the protocol allows it, e.g. a
    ledger keeping leases apart): the first sync fetches everything and records the user."""
    clock = Clock()

    class LeasesApart(SQLiteSyncLedger):
        def load_user(self, user_id: str) -> Any:
            record = super().load_user(user_id)
            return None if record is not None and record.last_synced_at is None and not record.accounts else record

    broker = Broker({"a0": "c0", "a1": "c1"}, clock)
    ledger = LeasesApart(":memory:")
    with flow_clock(clock):
        snapshot = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.operations() == [*LISTING, *HOLDINGS, ACTIVITIES, *HOLDINGS, ACTIVITIES]
    assert [a.state for a in snapshot.accounts] == [AccountState.SYNCED] * 2
    record = ledger.load_user(USER)
    assert record is not None and [a.account_id for a in record.accounts] == ["a0", "a1"]
    ledger.close()


def test_an_account_first_listed_on_a_broken_connection_is_fetched_once_it_is_fixed() -> None:
    """The ledger records the stale account with its connection, so CONNECTION_FIXED for that
    connection makes it active and everything of it due (docs/portfolio-sync.md, webhooks)."""
    clock = Clock()
    broker = Broker({"a0": "c0"}, clock)
    broker.disabled.add("c0")
    ledger = SQLiteSyncLedger(":memory:")
    with flow_clock(clock):
        first = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
        assert [(a.state, a.reconnect_authorization_id) for a in first.accounts] == [(AccountState.STALE, "c0")]
        assert broker.operations() == list(LISTING)
        record = ledger.load_user(USER)
        assert record is not None
        assert (record.accounts[0].connection_id, record.accounts[0].status) == ("c0", AccountStatus.STALE)
        broker.disabled.clear()
        ledger.mark(USER, LedgerChange.CONNECTION_FIXED, clock.now, connection_id="c0")
        record = ledger.load_user(USER)
        assert record is not None and record.accounts[0].status is AccountStatus.ACTIVE
        assert record.accounts[0].holdings_dirty_at == record.accounts[0].activities_dirty_at == clock.now
        clock.tick()
        broker.sent.clear()
        fixed = run(sync_portfolio(broker, USER, policy=SyncPolicy()), ledger)  # type: ignore[arg-type]
    assert broker.operations() == [*LISTING, *HOLDINGS, ACTIVITIES]
    assert [a.state for a in fixed.accounts] == [AccountState.SYNCED]
    record = ledger.load_user(USER)
    assert record is not None and (record.accounts[0].connection_id, record.accounts[0].status) == (
        "c0",
        AccountStatus.ACTIVE,
    )
    ledger.close()
