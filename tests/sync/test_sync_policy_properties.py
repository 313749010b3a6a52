"""The polling policy as docs/portfolio-sync.md states it, and the ledger's due list agreeing with it.

Holdings (and the listing of connections and accounts) are due every ``24 h / holdings_per_day``,
activities every ``24 h / activities_per_day``, each on its own clock; a webhook mark makes its own
kind due at once; a stale or gone account is never fetched. ``sync_due`` asks the ledger for the
users with anything due through ``policy.due_before(now)``: that list must be exactly the users the
policy would fetch something of.

Times and intervals are whole seconds here (each rate divides a day), so the float arithmetic is
exact and the boundary, "at least the interval has passed", is tested on the second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.settings import Settings
from aims_snaptrade.sync import (
    AccountStatus,
    AccountUpdate,
    LedgerChange,
    SQLiteSyncLedger,
    SyncOutcome,
    SyncPolicy,
)
from aims_snaptrade.sync.policy import DAY
from aims_snaptrade.sync.records import AccountRecord, UserRecord

# Rates that divide a day into whole seconds, from once a day to once a minute.
_RATES = st.sampled_from([1, 2, 3, 4, 6, 8, 12, 24, 48, 96, 1440])
_T0 = st.integers(1_600_000_000, 1_900_000_000)


def _policy(holdings: int, activities: int) -> SyncPolicy:
    return SyncPolicy(holdings_per_day=float(holdings), activities_per_day=float(activities))


def test_the_default_policy_is_snapTrades_guidance() -> None:
    policy = SyncPolicy()
    assert (policy.holdings_per_day, policy.activities_per_day, policy.lease_seconds) == (4.0, 1.0, 300.0)
    assert (policy.holdings_interval, policy.activities_interval) == (6 * 3600.0, 24 * 3600.0)
    assert DAY == 86_400.0


@settings(max_examples=100, deadline=None)
@given(_RATES, _RATES, _T0, st.integers(-2, 2), st.integers(0, 3 * 86_400))
def test_each_kind_is_due_on_its_own_interval(holdings: int, activities: int, t0: int, edge: int, other: int) -> None:
    """Holdings and the listing every day / holdings_per_day, activities every day / activities_per_day,
    whatever the other kind's clock says (``other`` seconds ago)."""
    policy = _policy(holdings, activities)
    h_every, a_every = 86_400 // holdings, 86_400 // activities
    assert (policy.holdings_interval, policy.activities_interval) == (h_every, a_every)

    now = t0 + h_every + edge  # holdings fetched h_every + edge seconds ago
    holdings_due = edge >= 0
    user = UserRecord("u", accounts_synced_at=t0, last_synced_at=t0)
    account = AccountRecord("a", "c", holdings_synced_at=t0, activities_synced_at=now - other)
    assert policy.accounts_due(user, now) is holdings_due
    assert policy.holdings_due(account, now) is holdings_due
    assert policy.activities_due(account, now) is (other >= a_every)

    now = t0 + a_every + edge  # activities fetched a_every + edge seconds ago
    account = AccountRecord("a", "c", holdings_synced_at=now - other, activities_synced_at=t0)
    assert policy.activities_due(account, now) is (edge >= 0)
    assert policy.holdings_due(account, now) is (other >= h_every)
    assert policy.due_before(now) == (now - h_every, now - a_every)


@settings(max_examples=50, deadline=None)
@given(_RATES, _RATES, _T0, st.booleans(), st.booleans(), st.booleans())
def test_marks_make_their_own_kind_due_at_once(
    holdings: int, activities: int, t0: int, listing: bool, holdings_mark: bool, activities_mark: bool
) -> None:
    """Just fetched (nothing due by the clock): a mark makes exactly its kind due."""
    policy = _policy(holdings, activities)
    now = t0 + 1
    user = UserRecord("u", accounts_synced_at=t0, dirty_at=t0 if listing else None)
    account = AccountRecord(
        "a",
        "c",
        holdings_synced_at=t0,
        activities_synced_at=t0,
        holdings_dirty_at=t0 if holdings_mark else None,
        activities_dirty_at=t0 if activities_mark else None,
    )
    assert policy.accounts_due(user, now) is listing
    assert policy.holdings_due(account, now) is holdings_mark
    assert policy.activities_due(account, now) is activities_mark


@pytest.mark.parametrize("status", [AccountStatus.STALE, AccountStatus.GONE])
def test_stale_and_gone_accounts_are_never_fetched(status: AccountStatus) -> None:
    policy = SyncPolicy()
    never = AccountRecord("a", "c", status=status)
    marked = AccountRecord(
        "a", "c", status=status, holdings_synced_at=0.0, holdings_dirty_at=1.0, activities_dirty_at=1.0
    )
    for account in (never, marked):
        assert not policy.holdings_due(account, 1e9)
        assert not policy.activities_due(account, 1e9)


def test_what_was_never_fetched_is_due() -> None:
    policy = SyncPolicy()
    now = 1_700_000_000.0
    assert policy.accounts_due(None, now)
    assert policy.accounts_due(UserRecord("u", last_synced_at=now), now)  # named by a webhook, never listed
    assert policy.holdings_due(None, now) and policy.activities_due(None, now)  # an account just listed
    fresh = AccountRecord("a", "c")
    assert policy.holdings_due(fresh, now) and policy.activities_due(fresh, now)
    # One kind fetched just now, the other never: only the other is due.
    assert not policy.holdings_due(AccountRecord("a", "c", holdings_synced_at=now), now)
    assert policy.activities_due(AccountRecord("a", "c", holdings_synced_at=now), now)
    assert policy.holdings_due(AccountRecord("a", "c", activities_synced_at=now), now)
    assert not policy.activities_due(AccountRecord("a", "c", activities_synced_at=now), now)


def test_the_policy_comes_from_its_two_settings() -> None:
    settings_ = Settings.build(
        {
            "client_id": "c",
            "consumer_key": "k" * 32,
            "environment": "sandbox",
            "sync_holdings_per_day": 3.0,
            "sync_activities_per_day": 0.5,
        }
    )
    policy = SyncPolicy.from_settings(settings_)
    assert (policy.holdings_per_day, policy.activities_per_day) == (3.0, 0.5)
    assert policy.lease_seconds == SyncPolicy().lease_seconds


def test_a_bad_policy_names_every_bad_value_and_snapTrades_guidance() -> None:
    with pytest.raises(SnapTradeValidationError) as caught:
        SyncPolicy(holdings_per_day=0, activities_per_day=-1.5, lease_seconds=True)  # type: ignore[arg-type]
    assert caught.value.message == (
        "Invalid SyncPolicy: holdings_per_day must be a positive number, got 0; "
        "activities_per_day must be a positive number, got -1.5; "
        "lease_seconds must be a positive number, got True."
    )
    assert caught.value.hint == "SnapTrade's guidance is SyncPolicy(holdings_per_day=4, activities_per_day=1)."
    lease = r"^Invalid SyncPolicy: lease_seconds must be a positive number, got '5'\. Hint"
    with pytest.raises(SnapTradeValidationError, match=lease):
        SyncPolicy(lease_seconds="5")  # type: ignore[arg-type]
    # The smallest positive values of each kind are accepted.
    tiny = SyncPolicy(holdings_per_day=1, activities_per_day=5e-324, lease_seconds=1e-9)
    assert tiny.holdings_interval == DAY


# --- the ledger's due list is the policy's ------------------------------------------------------

# An age is drawn relative to the policy's intervals (a second short of one, or exactly one), so the
# draws land on both sides of each clock's boundary; None is "never fetched".
_AGE = st.one_of(
    st.none(),
    st.sampled_from([("now", 0), ("holdings", -1), ("holdings", 0), ("activities", -1), ("activities", 0)]),
)
_MARK = st.sampled_from([False, False, False, True])
_account = st.fixed_dictionaries(
    {
        "status": st.sampled_from([AccountStatus.ACTIVE] * 3 + [AccountStatus.STALE, AccountStatus.GONE]),
        "holdings_ago": _AGE,
        "activities_ago": _AGE,
        "holdings_mark": _MARK,
        "activities_mark": _MARK,
    }
)
_user = st.fixed_dictionaries({"listed_ago": _AGE, "listing_mark": _MARK, "accounts": st.lists(_account, max_size=3)})


def _store(ledger: SQLiteSyncLedger, policy: SyncPolicy, user_id: str, user: dict, now: int) -> None:
    """Bring the ledger to ``user`` through the ledger's own writes, as syncs and webhooks would."""

    def at(age: tuple[str, int] | None) -> float | None:
        if age is None:
            return None
        clock, offset = age
        interval = {"now": 0.0, "holdings": policy.holdings_interval, "activities": policy.activities_interval}[clock]
        return now - (interval + offset)

    listed = at(user["listed_ago"])
    updates = []
    for i, account in enumerate(user["accounts"]):
        updates.append(
            AccountUpdate(
                f"a{i}",
                "c1",
                AccountStatus.ACTIVE,
                holdings_synced_at=at(account["holdings_ago"]),
                activities_synced_at=at(account["activities_ago"]),
            )
        )
    if listed is not None or updates:
        ledger.save_sync(SyncOutcome(user_id, now - 3 * 86_400, now - 3 * 86_400, listed, tuple(updates)))
    for i, account in enumerate(user["accounts"]):
        if account["holdings_mark"]:
            ledger.mark(user_id, LedgerChange.HOLDINGS_DIRTY, now - 1, account_id=f"a{i}")
        if account["activities_mark"]:
            ledger.mark(user_id, LedgerChange.ACTIVITIES_DIRTY, now - 1, account_id=f"a{i}")
        if account["status"] is not AccountStatus.ACTIVE:
            status = AccountUpdate(f"a{i}", "c1", account["status"])
            ledger.save_sync(SyncOutcome(user_id, now - 3 * 86_400, now - 3 * 86_400, None, (status,)))
    if user["listing_mark"] or (listed is None and not updates):
        ledger.mark(user_id, LedgerChange.ACCOUNTS_DIRTY, now - 1)


def _anything_due(policy: SyncPolicy, record: UserRecord, now: float) -> bool:
    return policy.accounts_due(record, now) or any(
        policy.holdings_due(a, now) or policy.activities_due(a, now) for a in record.accounts
    )


@settings(max_examples=60, deadline=None)
@given(_RATES, _RATES, st.lists(_user, min_size=1, max_size=6))
def test_the_ledger_lists_exactly_the_users_the_policy_would_fetch(
    holdings: int, activities: int, users: list[dict]
) -> None:
    policy = _policy(holdings, activities)
    now = 1_800_000_000
    ledger = SQLiteSyncLedger(":memory:")
    try:
        for n, user in enumerate(users):
            _store(ledger, policy, f"user-{n}", user, now)
        expected = []
        for n in range(len(users)):
            record = ledger.load_user(f"user-{n}")
            assert record is not None
            if _anything_due(policy, record, now):
                expected.append(f"user-{n}")
        assert ledger.due_users(*policy.due_before(now), None, 100) == expected
    finally:
        ledger.close()


def test_the_due_list_tells_the_holdings_clock_from_the_activities_clock(tmp_path: Path) -> None:
    """The default policy, 7 hours after a full sync: holdings are due (6 h), activities not (24 h);
    a user whose holdings were refreshed an hour ago but whose activities are 25 hours old is due
    for its activities."""
    policy = SyncPolicy()
    now = 1_800_000_000.0
    hour = 3600.0
    ledger = SQLiteSyncLedger(tmp_path / "ledger.db")
    try:
        seven = AccountUpdate("a", "c", AccountStatus.ACTIVE, now - 7 * hour, now - 7 * hour)
        ledger.save_sync(SyncOutcome("holdings-due", now - 7 * hour, now - 7 * hour, now - 7 * hour, (seven,)))
        split = AccountUpdate("a", "c", AccountStatus.ACTIVE, now - hour, now - 25 * hour)
        ledger.save_sync(SyncOutcome("activities-due", now - hour, now - hour, now - hour, (split,)))
        fresh = AccountUpdate("a", "c", AccountStatus.ACTIVE, now - 5 * hour, now - 23 * hour)
        ledger.save_sync(SyncOutcome("nothing-due", now - 5 * hour, now - 5 * hour, now - 5 * hour, (fresh,)))
        assert ledger.due_users(*policy.due_before(now), None, 10) == ["activities-due", "holdings-due"]
    finally:
        ledger.close()
