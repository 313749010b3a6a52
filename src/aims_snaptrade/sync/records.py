"""What a sync ledger holds, as plain immutable values (no IO, no SQL).

A ledger remembers, per user, when its connections and accounts were last listed and whether a
webhook asked for a new listing; per account, when each kind of data was last fetched, the
activities cursor and what webhooks marked dirty. It holds no portfolio data: snapshots go to the
caller, the ledger only says what is due next.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["AccountRecord", "AccountStatus", "AccountUpdate", "LedgerChange", "SyncOutcome", "UserRecord"]


class AccountStatus(enum.StrEnum):
    """An account's standing in the ledger.

    ``active`` accounts are synced when due; ``stale`` ones belong to a disabled connection and
    are not fetched until it is repaired (SnapTrade would serve cached data without an error);
    ``gone`` ones were removed at SnapTrade and are never fetched again.
    """

    ACTIVE = "active"
    STALE = "stale"
    GONE = "gone"


class LedgerChange(enum.StrEnum):
    """A change a webhook (or an operator) reports to the ledger."""

    HOLDINGS_DIRTY = "holdings_dirty"
    """The account's holdings changed: fetch balances and positions on the next due sync."""
    ACTIVITIES_DIRTY = "activities_dirty"
    """New transactions: fetch the account's new activities on the next due sync."""
    ACCOUNTS_DIRTY = "accounts_dirty"
    """List the user's connections and accounts again (a new account or connection)."""
    CONNECTION_BROKEN = "connection_broken"
    """The connection's accounts are stale until it is repaired."""
    CONNECTION_FIXED = "connection_fixed"
    """The connection works again: its accounts are active and everything of them is dirty."""
    CONNECTION_REMOVED = "connection_removed"
    """The connection was deleted: its accounts are gone."""
    ACCOUNT_REMOVED = "account_removed"
    """The account is gone."""
    USER_REMOVED = "user_removed"
    """The user was deleted: the ledger forgets it."""


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """One account's row. Times are Unix seconds; ``None`` means never.

    Attributes:
        account_id: SnapTrade account id.
        connection_id: Its brokerage authorization (connection) id.
        status: See :class:`AccountStatus`.
        holdings_synced_at: Last successful fetch of balances and positions.
        activities_synced_at: Last successful fetch of activities.
        activities_cursor: ISO date of the newest activity seen (the next fetch starts there).
        cursor_ids: Ids of the activities seen on the cursor date (fetched again, not reported again).
        holdings_dirty_at: When a webhook last said the holdings changed (cleared by a later fetch).
        activities_dirty_at: When a webhook last said transactions changed.
    """

    account_id: str
    connection_id: str | None = None
    status: AccountStatus = AccountStatus.ACTIVE
    holdings_synced_at: float | None = None
    activities_synced_at: float | None = None
    activities_cursor: str | None = None
    cursor_ids: tuple[str, ...] = ()
    holdings_dirty_at: float | None = None
    activities_dirty_at: float | None = None


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user's rows: the listing state and every account the ledger knows.

    Attributes:
        user_id: SnapTrade user id.
        accounts_synced_at: Last successful listing of connections and accounts.
        dirty_at: When a webhook last asked for a new listing.
        last_synced_at: End of the last successful sync of this user.
        accounts: The accounts, by account id order.
    """

    user_id: str
    accounts_synced_at: float | None = None
    dirty_at: float | None = None
    last_synced_at: float | None = None
    accounts: tuple[AccountRecord, ...] = ()

    def account(self, account_id: str) -> AccountRecord | None:
        """The record of ``account_id``, if known."""
        for record in self.accounts:
            if record.account_id == account_id:
                return record
        return None


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    """What one sync learnt about one account; ``None`` fields leave the stored value alone.

    A ``*_synced_at`` that is set also clears the matching dirty mark, unless the mark arrived
    after the sync started (that change may not be in what was fetched).
    """

    account_id: str
    connection_id: str | None
    status: AccountStatus
    holdings_synced_at: float | None = None
    activities_synced_at: float | None = None
    activities_cursor: str | None = None
    cursor_ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """Everything one user sync writes, in one transaction.

    Attributes:
        user_id: The user.
        started_at: When the sync started (marks newer than this survive it).
        finished_at: When it ended.
        accounts_synced_at: Set when connections and accounts were listed.
        accounts: Per-account updates.
        removed: Accounts the listing no longer shows (now ``gone``).
        leased: The sync held the user's lease, so the user's row exists unless the user was
            erased while the sync ran (``forget_user``, or a ``USER_DELETED`` webhook's mark):
            then the ledger writes nothing back.
    """

    user_id: str
    started_at: float
    finished_at: float
    accounts_synced_at: float | None = None
    accounts: tuple[AccountUpdate, ...] = field(default_factory=tuple)
    removed: tuple[str, ...] = field(default_factory=tuple)
    leased: bool = False
