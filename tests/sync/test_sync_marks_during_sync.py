"""Marks that webhooks make while a user is being synced are synced by the holder, not lost.

A second worker that finds the user held gives up without a request (and without marks lost); the
holder reads the marks again before it releases the lease, and once more after releasing it.
Webhooks are played by a ledger that marks the user at a chosen step of the holder's sync, as a
webhook handler in another process would.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_helpers import client_kwargs, secrets_of, seed

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.sync import AccountState, LedgerChange, SnapTradeSyncInProgressError, SQLiteSyncLedger
from aims_snaptrade.sync.flow import MAX_ROUNDS
from aims_snaptrade.testing import SnapTradeEmulator


class MarkingLedger(SQLiteSyncLedger):
    """A ledger on which "a webhook" marks an account at the ``at``-th call of ``step``."""

    def __init__(self, step: str, change: LedgerChange, times: int = 1) -> None:
        super().__init__(":memory:")
        self.step, self.change, self.times = step, change, times
        self.target: tuple[str, str] | None = None
        self.fired = 0
        self.second_worker: list[bool] = []

    def _webhook(self) -> None:
        if self.target is None or self.fired >= self.times:
            return
        self.fired += 1
        user_id, account_id = self.target
        self.mark(user_id, self.change, time.time(), account_id)
        # A second worker asked for the same user now: it must not get it.
        self.second_worker.append(self.acquire_lease(user_id, "second-worker", time.time(), time.time() + 60))

    def save_sync(self, outcome: Any) -> None:
        super().save_sync(outcome)
        if self.step == "save_sync":
            self._webhook()

    def release_lease(self, user_id: str, owner: str) -> None:
        super().release_lease(user_id, owner)
        if self.step == "release_lease" and self.target is not None and self.fired < self.times:
            # Between the holder's last read and its release nobody could take the user; right
            # after the release a webhook marks it and nobody else syncs.
            self.fired += 1
            self.mark(self.target[0], self.change, time.time(), self.target[1])


@pytest.mark.parametrize("step", ["save_sync", "release_lease"])
@pytest.mark.parametrize(
    ("change", "operations"),
    [
        (LedgerChange.HOLDINGS_DIRTY, {"get_user_account_balance", "get_all_account_positions"}),
        (LedgerChange.ACTIVITIES_DIRTY, {"get_account_activities"}),
    ],
)
def test_a_mark_made_during_the_sync_is_synced_by_the_holder(
    emu: SnapTradeEmulator, step: str, change: LedgerChange, operations: set[str]
) -> None:
    (user,) = seed(emu, 1, scenario="self_directed")
    ledger = MarkingLedger(step, change)
    with SafeSnapTradeClient(**client_kwargs(emu, secret_store=secrets_of([user]), sync_ledger=ledger)) as client:
        client.sync_portfolio(user.user_id)  # the first sync, with nothing marked meanwhile
        emu.journal.clear()
        account = user.account_ids[0]
        ledger.target = (user.user_id, account)
        client.mark_from_webhook(
            {"eventType": "ACCOUNT_HOLDINGS_UPDATED", "userId": user.user_id, "accountId": account}
        )
        snapshot = client.sync_portfolio(user.user_id)
        assert ledger.fired == 1
        assert ledger.second_worker in ([], [False])  # the second worker never got the user
        # Fetched twice: once for the mark before the sync, once for the one made during it.
        balances = emu.journal.count(operation="get_user_account_balance", account_id=account)
        assert balances == 1 + (change is LedgerChange.HOLDINGS_DIRTY)
        for operation in operations:
            assert emu.journal.count(operation=operation, account_id=account) >= 1
        assert {e.account_id for e in emu.journal} == {account}  # nothing for the unmarked account
        record = ledger.load_user(user.user_id)
        assert record is not None
        marked = record.account(account)
        assert marked is not None and marked.holdings_dirty_at is None and marked.activities_dirty_at is None
        assert snapshot.requests == len(emu.journal)
        assert {a.account_id: a.state for a in snapshot.accounts}[account] is AccountState.SYNCED
        # Nothing left marked: the next sync sends nothing.
        emu.journal.clear()
        assert client.sync_portfolio(user.user_id).requests == 0


def test_a_user_marked_without_pause_is_left_to_the_next_sync_due_after_max_rounds(emu: SnapTradeEmulator) -> None:
    (user,) = seed(emu, 1)
    ledger = MarkingLedger("save_sync", LedgerChange.HOLDINGS_DIRTY, times=MAX_ROUNDS + 3)
    with SafeSnapTradeClient(**client_kwargs(emu, secret_store=secrets_of([user]), sync_ledger=ledger)) as client:
        client.sync_portfolio(user.user_id)
        ledger.target = (user.user_id, user.account_ids[0])
        emu.journal.clear()
        client.sync_portfolio(user.user_id)
        # Round 1 finds nothing due; rounds 2 to MAX_ROUNDS fetch what was marked meanwhile, then it stops.
        assert emu.journal.count(operation="get_user_account_balance") == MAX_ROUNDS - 1
        assert ledger.due_users(0, 0, None, 10) == [user.user_id]  # still marked: sync_due takes it
        assert ledger.acquire_lease(user.user_id, "next", time.time(), time.time() + 1)  # released


def test_the_second_worker_is_told_the_truth(emu: SnapTradeEmulator) -> None:
    (user,) = seed(emu, 1)
    ledger = SQLiteSyncLedger(":memory:")
    assert ledger.acquire_lease(user.user_id, "holder", time.time(), time.time() + 60)
    with SafeSnapTradeClient(**client_kwargs(emu, secret_store=secrets_of([user]), sync_ledger=ledger)) as client:
        client.mark_from_webhook({"eventType": "CONNECTION_ADDED", "userId": user.user_id})
        with pytest.raises(SnapTradeSyncInProgressError) as held:
            client.sync_portfolio(user.user_id)
    assert "reads its marks again before it releases" in (held.value.hint or "")
    assert len(emu.journal) == 0
    assert ledger.due_users(0, 0, None, 10) == [user.user_id]  # the mark stays for the holder


class ScriptedLedger(SQLiteSyncLedger):
    """A ledger on which "webhooks" mark accounts right after chosen ledger calls of the holder."""

    STEPS = ("load_user", "save_sync", "release_lease", "acquire_lease")

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.script: list[tuple[str, int, str, LedgerChange]] = []  # (step, nth call, account, change)
        self.user_id = ""
        self.calls: dict[str, int] = {}
        self.stolen: list[bool] = []

    def _after(self, step: str) -> None:
        self.calls[step] = self.calls.get(step, 0) + 1
        for when, nth, account, change in self.script:
            if (when, nth) == (step, self.calls[step]):
                self.mark(self.user_id, change, time.time(), account)
                if step != "release_lease":  # the holder holds the user: nobody else may take it
                    self.stolen.append(
                        self.acquire_lease(self.user_id, "other", time.time(), time.time() + 60, _quiet=True)
                    )

    def load_user(self, user_id: str) -> Any:
        record = super().load_user(user_id)
        self._after("load_user")
        return record

    def save_sync(self, outcome: Any) -> None:
        super().save_sync(outcome)
        self._after("save_sync")

    def release_lease(self, user_id: str, owner: str) -> None:
        super().release_lease(user_id, owner)
        self._after("release_lease")

    def acquire_lease(self, user_id: str, owner: str, now: float, until: float, _quiet: bool = False) -> bool:
        taken = super().acquire_lease(user_id, owner, now, until)
        if not _quiet:
            self._after("acquire_lease")
        return taken


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    script=st.lists(
        st.tuples(
            st.sampled_from(ScriptedLedger.STEPS),
            st.integers(1, 2),
            st.integers(0, 1),
            st.sampled_from([LedgerChange.HOLDINGS_DIRTY, LedgerChange.ACTIVITIES_DIRTY]),
        ),
        max_size=MAX_ROUNDS - 2,
    )
)
def test_whatever_is_marked_during_a_sync_is_synced_before_it_returns(
    emu: SnapTradeEmulator, script: list[tuple[str, int, int, LedgerChange]]
) -> None:
    users = _seeded(emu)
    user = users[0]
    ledger = ScriptedLedger()
    ledger.user_id = user.user_id
    with SafeSnapTradeClient(**client_kwargs(emu, secret_store=secrets_of([user]), sync_ledger=ledger)) as client:
        client.sync_portfolio(user.user_id)
        ledger.calls.clear()
        ledger.script = [(step, nth, user.account_ids[i], change) for step, nth, i, change in script]
        client.sync_portfolio(user.user_id)
    record = ledger.load_user(user.user_id)
    assert record is not None
    leftover = [
        (a.account_id, a.holdings_dirty_at, a.activities_dirty_at)
        for a in record.accounts
        if a.holdings_dirty_at is not None or a.activities_dirty_at is not None
    ]
    assert leftover == []  # every mark made during the sync was synced by the holder
    assert not any(ledger.stolen)  # and no second worker got the user meanwhile
    assert ledger.acquire_lease(user.user_id, "next", time.time(), time.time() + 1)  # released at the end


_SEEDED: dict[int, list[Any]] = {}


def _seeded(emu: SnapTradeEmulator) -> list[Any]:
    # One seeded user per emulator: syncs only read, so every example may reuse it.
    if id(emu) not in _SEEDED:
        _SEEDED.clear()
        _SEEDED[id(emu)] = seed(emu, 1, scenario="self_directed")
    return _SEEDED[id(emu)]
