"""The polling policy: what a user sync fetches now, and what can wait.

SnapTrade's guidance (its production guide): refresh holdings in the background at most four
times a day per user, activities at most once a day per account, and prefer webhooks. The default
:class:`SyncPolicy` follows it; webhook marks (dirty holdings or transactions, a new account, a
repaired connection) make the marked data due at once, whatever the intervals say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.sync.records import AccountRecord, AccountStatus, UserRecord

if TYPE_CHECKING:
    from aims_snaptrade.settings import Settings

__all__ = ["DAY", "SyncPolicy"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """How often each kind of data may be polled, and how long a user's sync lease lasts.

    Attributes:
        holdings_per_day: Background refreshes of connections, accounts, balances and positions
            per user per day (SnapTrade: at most 4).
        activities_per_day: Background fetches of activities per account per day (SnapTrade: 1).
        lease_seconds: How long one worker may hold a user before another may take it over
            (a crashed worker's lease simply expires).
    """

    holdings_per_day: float = 4.0
    activities_per_day: float = 1.0
    lease_seconds: float = 300.0

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be a positive number, got {value!r}"
            for name, value in (
                ("holdings_per_day", self.holdings_per_day),
                ("activities_per_day", self.activities_per_day),
                ("lease_seconds", self.lease_seconds),
            )
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
        ]
        if problems:
            raise SnapTradeValidationError(
                "Invalid SyncPolicy: " + "; ".join(problems) + ".",
                hint="SnapTrade's guidance is SyncPolicy(holdings_per_day=4, activities_per_day=1).",
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncPolicy:
        """The policy of ``SNAPTRADE_SYNC_HOLDINGS_PER_DAY`` and ``SNAPTRADE_SYNC_ACTIVITIES_PER_DAY``."""
        return cls(holdings_per_day=settings.sync_holdings_per_day, activities_per_day=settings.sync_activities_per_day)

    @property
    def holdings_interval(self) -> float:
        """Seconds between background holdings refreshes of one user."""
        return DAY / self.holdings_per_day

    @property
    def activities_interval(self) -> float:
        """Seconds between background activities fetches of one account."""
        return DAY / self.activities_per_day

    def accounts_due(self, user: UserRecord | None, now: float) -> bool:
        """List connections and accounts: never listed, marked, or the holdings interval passed."""
        if user is None or user.accounts_synced_at is None or user.dirty_at is not None:
            return True
        return now - user.accounts_synced_at >= self.holdings_interval

    def holdings_due(self, account: AccountRecord | None, now: float) -> bool:
        """Fetch balances and positions of an active account."""
        if account is None:
            return True
        if account.status is not AccountStatus.ACTIVE:
            return False
        if account.holdings_synced_at is None or account.holdings_dirty_at is not None:
            return True
        return now - account.holdings_synced_at >= self.holdings_interval

    def activities_due(self, account: AccountRecord | None, now: float) -> bool:
        """Fetch new activities of an active account."""
        if account is None:
            return True
        if account.status is not AccountStatus.ACTIVE:
            return False
        if account.activities_synced_at is None or account.activities_dirty_at is not None:
            return True
        return now - account.activities_synced_at >= self.activities_interval

    def due_before(self, now: float) -> tuple[float, float]:
        """``(holdings_before, activities_before)``: syncs at or before these times are due now."""
        return now - self.holdings_interval, now - self.activities_interval
