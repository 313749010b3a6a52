"""Portfolio sync for many users: incremental, webhook-driven, resumable, within the budget.

* :meth:`SafeSnapTradeClient.sync_portfolio` / :meth:`AsyncSafeSnapTradeClient.sync_portfolio`:
  one user, returning a :class:`PortfolioSnapshot` of what was due.
* :meth:`AsyncSafeSnapTradeClient.sync_users` / ``sync_due`` / ``stream_sync``: many users.
* :meth:`SafeSnapTradeClient.mark_from_webhook`: webhooks mark the ledger so ``sync_due`` fetches
  exactly what changed.
* :class:`SyncWorker`: the asyncio worker path (``sync_due`` in the background, woken by
  webhooks); Celery fleets use the beat schedule of ``aims_snaptrade.integrations.celery``.
* :class:`SyncLedger` and its SQLite / PostgreSQL implementations hold the progress.

See docs/portfolio-sync.md.
"""

from __future__ import annotations

from aims_snaptrade.sync.batch import (
    BatchSummary,
    ProgressCallback,
    Sink,
    SyncProgress,
    UserSyncResult,
    due_user_ids,
    stream_sync,
    sync_users,
)
from aims_snaptrade.sync.flow import SnapTradeSyncInProgressError, sync_portfolio
from aims_snaptrade.sync.ledger import SQLiteSyncLedger, SyncLedger, open_sync_ledger
from aims_snaptrade.sync.policy import SyncPolicy
from aims_snaptrade.sync.records import (
    AccountRecord,
    AccountStatus,
    AccountUpdate,
    LedgerChange,
    SyncOutcome,
    UserRecord,
)
from aims_snaptrade.sync.snapshot import AccountSnapshot, AccountState, PortfolioSnapshot, SyncFailure
from aims_snaptrade.sync.webhooks import LedgerMark, ledger_marks, mark_ledger
from aims_snaptrade.sync.worker import SyncWorker

__all__ = [
    "AccountRecord",
    "AccountSnapshot",
    "AccountState",
    "AccountStatus",
    "AccountUpdate",
    "BatchSummary",
    "LedgerChange",
    "LedgerMark",
    "PortfolioSnapshot",
    "ProgressCallback",
    "SQLiteSyncLedger",
    "Sink",
    "SnapTradeSyncInProgressError",
    "SyncFailure",
    "SyncLedger",
    "SyncOutcome",
    "SyncPolicy",
    "SyncProgress",
    "SyncWorker",
    "UserRecord",
    "UserSyncResult",
    "due_user_ids",
    "ledger_marks",
    "mark_ledger",
    "open_sync_ledger",
    "stream_sync",
    "sync_portfolio",
    "sync_users",
]
