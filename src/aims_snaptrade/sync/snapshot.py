"""Typed results of a portfolio sync: one :class:`PortfolioSnapshot` per user."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import Field

from aims_snaptrade.errors import SnapTradeError
from aims_snaptrade.models import Account, Activity, Balance, Position, SnapTradeModel

__all__ = ["AccountSnapshot", "AccountState", "PortfolioSnapshot", "SyncFailure"]


class AccountState(enum.StrEnum):
    """How one account came out of a sync."""

    SYNCED = "synced"
    """Everything due was fetched."""
    NOT_DUE = "not_due"
    """Nothing was due under the polling policy; nothing was fetched."""
    STALE = "stale"
    """The connection is disabled: SnapTrade only has stale data. Reconnect with
    ``connection_portal_url(user_id, reconnect=snapshot.reconnect_authorization_id)``."""
    POPULATING = "populating"
    """SnapTrade is still importing this new connection (425, code 3012); try again later."""
    RETIRED = "retired"
    """SnapTrade answered 410: this endpoint is retired for this account."""
    GONE = "gone"
    """The account was removed at SnapTrade."""
    FAILED = "failed"
    """A fetch failed (see ``error``); it is due again on the next sync."""


class SyncFailure(SnapTradeModel):
    """A failure reported in a result instead of raised: safe to log (redacted like every error)."""

    type: str
    message: str
    status: int | None = None
    code: str | None = None
    request_id: str | None = None
    retryable: bool = False

    @classmethod
    def from_error(cls, error: BaseException) -> SyncFailure:
        """Describe ``error`` (its redacted message, status, code and request id)."""
        if isinstance(error, SnapTradeError):
            return cls(
                type=type(error).__name__,
                message=str(error),
                status=error.status,
                code=error.code,
                request_id=error.request_id,
                retryable=error.retryable,
            )
        return cls(type=type(error).__name__, message=f"unexpected {type(error).__name__}")


class AccountSnapshot(SnapTradeModel):
    """One account as this sync saw it. ``None`` data was not fetched (not due, or failed)."""

    account_id: str
    connection_id: str | None = None
    state: AccountState
    account: Account | None = Field(default=None, description="The account, when accounts were listed.")
    balances: list[Balance] | None = None
    positions: list[Position] | None = None
    new_activities: list[Activity] = Field(default_factory=list)
    holdings_fetched: bool = False
    activities_fetched: bool = False
    reconnect_authorization_id: str | None = None
    error: SyncFailure | None = None


class PortfolioSnapshot(SnapTradeModel):
    """What ``sync_portfolio(user_id)`` fetched for one user.

    Attributes:
        user_id: The user.
        started_at: When the sync started.
        finished_at: When it ended.
        accounts_listed: Connections and accounts were listed (due, marked or forced).
        accounts: Every account the user has (or had: ``gone``), in account id order.
        requests: Requests this sync sent (retries included).
    """

    user_id: str
    started_at: datetime
    finished_at: datetime
    accounts_listed: bool
    accounts: list[AccountSnapshot]
    requests: int = 0

    @property
    def ok(self) -> bool:
        """True when no account failed."""
        return all(a.state is not AccountState.FAILED for a in self.accounts)

    def in_state(self, state: AccountState) -> list[AccountSnapshot]:
        """The accounts that came out in ``state``."""
        return [a for a in self.accounts if a.state is state]
