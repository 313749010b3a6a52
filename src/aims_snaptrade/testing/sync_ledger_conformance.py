"""A conformance suite any :class:`~aims_snaptrade.sync.SyncLedger` can run against itself.

Subclass :class:`SyncLedgerConformance` in a test module under a ``Test*`` name and implement
:meth:`~SyncLedgerConformance.make_ledger`; pytest collects every inherited test::

    from aims_snaptrade.testing.sync_ledger_conformance import SyncLedgerConformance

    class TestDynamoLedger(SyncLedgerConformance):
        def make_ledger(self, tmp_path):
            return DynamoSyncLedger(table=f"sync-{tmp_path.name}")

``make_ledger(tmp_path)`` is called once per test, and again with the same ``tmp_path`` when a
test checks that progress survives reopening (only for ledgers declaring ``persistent = True``).
The suite needs ``pytest`` only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from aims_snaptrade.errors import SnapTradeError
from aims_snaptrade.sync.ledger.protocol import SyncLedger
from aims_snaptrade.sync.records import AccountStatus, AccountUpdate, LedgerChange, SyncOutcome
from aims_snaptrade.testing.forget_conformance import ForgetRule, assert_forgotten

__all__ = ["SyncLedgerConformance"]

HOUR = 3600.0


def _sync(
    user: str, at: float, *accounts: AccountUpdate, listed: bool = True, removed: tuple[str, ...] = ()
) -> SyncOutcome:
    return SyncOutcome(user, at, at + 1, at if listed else None, tuple(accounts), removed)


def _full(account: str, at: float, connection: str = "c1", cursor: str = "2026-01-02") -> AccountUpdate:
    return AccountUpdate(account, connection, AccountStatus.ACTIVE, at, at, cursor, ("x1", "x2"))


class SyncLedgerConformance(ForgetRule):
    """Behaviour every sync ledger must have. Subclass as ``Test<Something>`` and implement :meth:`make_ledger`."""

    #: Threads racing for one lease in the concurrency test.
    concurrency_threads: int = 8

    def make_ledger(self, tmp_path: Path) -> SyncLedger:
        """Return a ledger over the storage identified by ``tmp_path`` (fresh for every test)."""
        raise NotImplementedError("implement make_ledger(tmp_path) in your conformance subclass")

    @pytest.fixture
    def ledger(self, tmp_path: Path) -> Iterator[SyncLedger]:
        """A fresh ledger, closed after the test."""
        ledger = self.make_ledger(tmp_path)
        try:
            yield ledger
        finally:
            ledger.close()

    def test_forgetting_a_user_leaves_no_byte_of_the_id(self, ledger: SyncLedger, tmp_path: Path) -> None:
        """``forget_user`` removes the user's rows (accounts, marks, batch entries) leaving no byte of
        the user's id or account ids in the storage; other users stay."""
        gone, account, kept = "forget-ledger-c07e19", "forget-ledger-account-2b8a", "keep-ledger-61f0d4"
        ledger.save_sync(_sync(gone, 1000.0, _full(account, 1000.0)))
        ledger.mark(gone, LedgerChange.HOLDINGS_DIRTY, 1100.0, account_id=account)
        ledger.finish_in_batch("forget-batch", gone, 1200.0)
        ledger.save_sync(_sync(kept, 1000.0, _full("keep-ledger-account", 1000.0)))
        assert ledger.forget_user(gone) >= 2
        assert ledger.load_user(gone) is None
        assert ledger.load_user(kept) is not None
        assert_forgotten(self._raw_or_skip(ledger, tmp_path), (gone, account), kept)

    def test_declares_its_traits(self, ledger: SyncLedger) -> None:
        assert isinstance(ledger, SyncLedger)
        assert isinstance(ledger.kind, str)
        assert ledger.kind
        assert isinstance(ledger.persistent, bool)

    def test_unknown_user_is_none_and_due_lists_nobody(self, ledger: SyncLedger) -> None:
        assert ledger.load_user("nobody") is None
        assert ledger.due_users(0.0, 0.0, None, 10) == []

    def test_save_then_load_round_trips(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0), _full("a2", 1000.0, "c2")))
        user = ledger.load_user("u1")
        assert user is not None
        assert user.accounts_synced_at == 1000.0
        assert user.last_synced_at == 1001.0
        assert user.dirty_at is None
        assert [a.account_id for a in user.accounts] == ["a1", "a2"]
        a1 = user.account("a1")
        assert a1 is not None
        assert (a1.connection_id, a1.status, a1.holdings_synced_at, a1.activities_synced_at) == (
            "c1",
            AccountStatus.ACTIVE,
            1000.0,
            1000.0,
        )
        assert (a1.activities_cursor, a1.cursor_ids) == ("2026-01-02", ("x1", "x2"))

    def test_partial_update_keeps_what_it_does_not_name(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0)))
        holdings_only = AccountUpdate("a1", None, AccountStatus.ACTIVE, holdings_synced_at=2000.0)
        ledger.save_sync(_sync("u1", 2000.0, holdings_only, listed=False))
        user = ledger.load_user("u1")
        assert user is not None
        assert user.accounts_synced_at == 1000.0
        a1 = user.accounts[0]
        assert (a1.holdings_synced_at, a1.activities_synced_at, a1.connection_id) == (2000.0, 1000.0, "c1")
        assert a1.activities_cursor == "2026-01-02"

    def test_due_users_follow_the_intervals(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("fresh", 10 * HOUR, _full("a1", 10 * HOUR)))
        ledger.save_sync(_sync("old", 1 * HOUR, _full("a2", 1 * HOUR)))
        now = 12 * HOUR
        assert ledger.due_users(now - 6 * HOUR, now - 24 * HOUR, None, 10) == ["old"]
        assert ledger.due_users(now - 1 * HOUR, now - 24 * HOUR, None, 10) == ["fresh", "old"]
        assert ledger.due_users(0.0, 0.0, None, 10) == []

    def test_due_users_pages_in_order(self, ledger: SyncLedger) -> None:
        for i in range(7):
            ledger.mark(f"u{i}", LedgerChange.ACCOUNTS_DIRTY, 5.0)
        first = ledger.due_users(0.0, 0.0, None, 3)
        second = ledger.due_users(0.0, 0.0, first[-1], 3)
        third = ledger.due_users(0.0, 0.0, second[-1], 3)
        assert first + second + third == [f"u{i}" for i in range(7)]

    def test_marks_make_exactly_that_kind_due_until_fetched(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0), _full("a2", 1000.0)))
        ledger.mark("u1", LedgerChange.HOLDINGS_DIRTY, 1500.0, account_id="a1")
        ledger.mark("u1", LedgerChange.ACTIVITIES_DIRTY, 1500.0, account_id="a2")
        assert ledger.due_users(0.0, 0.0, None, 10) == ["u1"]
        user = ledger.load_user("u1")
        assert user is not None
        a1, a2 = user.accounts
        assert (a1.holdings_dirty_at, a1.activities_dirty_at) == (1500.0, None)
        assert (a2.holdings_dirty_at, a2.activities_dirty_at) == (None, 1500.0)
        # Fetching the holdings of a1 clears its mark; a2's activities mark stays.
        ledger.save_sync(_sync("u1", 1600.0, AccountUpdate("a1", None, AccountStatus.ACTIVE, 1600.0), listed=False))
        user = ledger.load_user("u1")
        assert user is not None
        assert user.accounts[0].holdings_dirty_at is None
        assert user.accounts[1].activities_dirty_at == 1500.0

    def test_a_mark_newer_than_the_fetch_survives_it(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0)))
        ledger.mark("u1", LedgerChange.HOLDINGS_DIRTY, 2500.0, account_id="a1")
        # A sync that started before the mark may not contain the change.
        ledger.save_sync(_sync("u1", 2000.0, AccountUpdate("a1", None, AccountStatus.ACTIVE, 2000.0), listed=False))
        user = ledger.load_user("u1")
        assert user is not None
        assert user.accounts[0].holdings_dirty_at == 2500.0
        ledger.mark("u1", LedgerChange.ACCOUNTS_DIRTY, 2600.0)
        ledger.save_sync(_sync("u1", 2550.0))
        user = ledger.load_user("u1")
        assert user is not None
        assert user.dirty_at == 2600.0

    def test_marks_on_unknown_things_ask_for_a_listing(self, ledger: SyncLedger) -> None:
        ledger.mark("new", LedgerChange.HOLDINGS_DIRTY, 5.0, account_id="never-seen")
        user = ledger.load_user("new")
        assert user is not None
        assert user.dirty_at == 5.0
        assert user.accounts == ()
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0)))
        ledger.mark("u1", LedgerChange.CONNECTION_BROKEN, 1100.0, connection_id="unknown-connection")
        user = ledger.load_user("u1")
        assert user is not None
        assert user.dirty_at == 1100.0

    def test_connection_broken_fixed_and_removed(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0, "c1"), _full("a2", 1000.0, "c2")))
        ledger.mark("u1", LedgerChange.CONNECTION_BROKEN, 1100.0, connection_id="c1")
        user = ledger.load_user("u1")
        assert user is not None
        assert [a.status for a in user.accounts] == [AccountStatus.STALE, AccountStatus.ACTIVE]
        ledger.mark("u1", LedgerChange.CONNECTION_FIXED, 1200.0, connection_id="c1")
        user = ledger.load_user("u1")
        assert user is not None
        assert user.dirty_at == 1200.0
        a1 = user.accounts[0]
        assert (a1.status, a1.holdings_dirty_at, a1.activities_dirty_at) == (AccountStatus.ACTIVE, 1200.0, 1200.0)
        ledger.mark("u1", LedgerChange.CONNECTION_REMOVED, 1300.0, connection_id="c2")
        ledger.mark("u1", LedgerChange.ACCOUNT_REMOVED, 1300.0, account_id="a1")
        user = ledger.load_user("u1")
        assert user is not None
        assert [a.status for a in user.accounts] == [AccountStatus.GONE, AccountStatus.GONE]

    def test_gone_accounts_are_never_due(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0)))
        ledger.save_sync(_sync("u1", 5000.0, removed=("a1",)))
        ledger.mark("u1", LedgerChange.HOLDINGS_DIRTY, 5100.0, account_id="a1")
        user = ledger.load_user("u1")
        assert user is not None
        assert user.accounts[0].status is AccountStatus.GONE
        assert user.accounts[0].holdings_dirty_at is None

    def test_user_removed_is_forgotten(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0)))
        ledger.mark("u1", LedgerChange.USER_REMOVED, 1100.0)
        assert ledger.load_user("u1") is None

    def test_lease_is_exclusive_until_released_or_expired(self, ledger: SyncLedger) -> None:
        assert ledger.acquire_lease("u1", "w1", 100.0, 400.0)
        assert not ledger.acquire_lease("u1", "w2", 200.0, 500.0)
        assert ledger.acquire_lease("u1", "w1", 200.0, 500.0)  # the holder may renew
        ledger.release_lease("u1", "w2")  # not the holder: no effect
        assert not ledger.acquire_lease("u1", "w2", 300.0, 600.0)
        assert ledger.acquire_lease("u1", "w2", 500.0, 800.0)  # expired
        ledger.release_lease("u1", "w2")
        assert ledger.acquire_lease("u1", "w3", 501.0, 900.0)

    def test_one_lease_winner_among_racing_threads(self, ledger: SyncLedger) -> None:
        barrier = threading.Barrier(self.concurrency_threads)
        wins: list[str] = []

        def race(owner: str) -> None:
            barrier.wait()
            if ledger.acquire_lease("contended", owner, 100.0, 400.0):
                wins.append(owner)

        threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(self.concurrency_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(wins) == 1

    def test_batch_progress(self, ledger: SyncLedger) -> None:
        ledger.finish_in_batch("b1", "u1", 1.0)
        ledger.finish_in_batch("b1", "u1", 2.0)  # idempotent
        ledger.finish_in_batch("b1", "u3", 1.0)
        ledger.finish_in_batch("b2", "u2", 1.0)
        assert ledger.finished_in_batch("b1", ["u1", "u2", "u3", "u4"]) == {"u1", "u3"}
        assert ledger.finished_in_batch("b1", [f"x{i}" for i in range(1200)] + ["u1"]) == {"u1"}
        assert ledger.forget_batch("b1") == 2
        assert ledger.finished_in_batch("b1", ["u1", "u3"]) == set()
        assert ledger.finished_in_batch("b2", ["u2"]) == {"u2"}

    def test_forget_user_erases_every_row_of_that_user_only(self, ledger: SyncLedger) -> None:
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0), _full("a2", 1000.0, "c2")))
        ledger.save_sync(_sync("u2", 1000.0, _full("b1", 1000.0)))
        ledger.finish_in_batch("batch", "u1", 1.0)
        ledger.finish_in_batch("batch", "u2", 1.0)
        assert ledger.forget_user("u1") == 4  # the user, two accounts, one batch entry
        assert ledger.load_user("u1") is None
        assert ledger.finished_in_batch("batch", ["u1", "u2"]) == {"u2"}
        assert ledger.load_user("u2") is not None
        assert ledger.forget_user("u1") == 0

    def test_a_leased_save_never_brings_back_a_user_erased_while_it_ran(self, ledger: SyncLedger) -> None:
        """A sync takes the lease, the user is erased (``forget_user``, or a ``USER_DELETED`` mark),
        then the sync saves: nothing of the user comes back. A save without a lease still records."""
        for erase in (
            lambda: ledger.forget_user("u1"),
            lambda: ledger.mark("u1", LedgerChange.USER_REMOVED, 1500.0),
        ):
            assert ledger.acquire_lease("u1", "w1", 1000.0, 2000.0)
            erase()
            outcome = _sync("u1", 1000.0, _full("a1", 1000.0))
            ledger.save_sync(replace(outcome, leased=True))
            assert ledger.load_user("u1") is None
            assert ledger.due_users(1e12, 1e12, None, 10) == []
        assert ledger.acquire_lease("u2", "w1", 1000.0, 2000.0)
        ledger.save_sync(replace(_sync("u2", 1000.0, _full("b1", 1000.0)), leased=True))
        user = ledger.load_user("u2")
        assert user is not None
        assert [a.account_id for a in user.accounts] == ["b1"]

    def test_bad_input_is_a_typed_error_before_any_write(self, ledger: SyncLedger) -> None:
        with pytest.raises(SnapTradeError):
            ledger.mark("", LedgerChange.ACCOUNTS_DIRTY, 1.0)
        with pytest.raises(SnapTradeError):
            ledger.mark("u1", LedgerChange.HOLDINGS_DIRTY, 1.0)  # which account?
        with pytest.raises(SnapTradeError):
            ledger.due_users(0.0, 0.0, None, 0)
        assert ledger.load_user("u1") is None

    def test_progress_survives_reopening(self, ledger: SyncLedger, tmp_path: Path) -> None:
        if not ledger.persistent:
            pytest.skip("an in-memory ledger forgets by design")
        ledger.save_sync(_sync("u1", 1000.0, _full("a1", 1000.0)))
        ledger.finish_in_batch("b1", "u1", 1.0)
        ledger.close()
        again = self.make_ledger(tmp_path)
        try:
            user = again.load_user("u1")
            assert user is not None
            assert user.accounts[0].holdings_synced_at == 1000.0
            assert again.finished_in_batch("b1", ["u1"]) == {"u1"}
        finally:
            again.close()
