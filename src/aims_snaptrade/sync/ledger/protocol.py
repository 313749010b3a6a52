"""The extension point: what a sync ledger must do.

Any object with these methods works; run
:class:`aims_snaptrade.testing.sync_ledger_conformance.SyncLedgerConformance` against it. The
clients call it through ``StoreCall(..., store="ledger")`` effects, from worker threads in the
async client, so a ledger must be thread-safe; fleets share one ledger between processes and
hosts, so every method must also be safe against concurrent callers elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from aims_snaptrade.sync.records import LedgerChange, SyncOutcome, UserRecord

__all__ = ["SyncLedger"]


@runtime_checkable
class SyncLedger(Protocol):  # pragma: no mutate block (docs/testing.md: Protocols)
    """Durable per-user, per-account sync progress, leases and batch progress.

    Contract (checked by the conformance suite):

    * ``save_sync`` is atomic and durable when it returns.
    * A dirty mark is cleared only by a fetch of that kind that started after the mark.
    * ``acquire_lease`` succeeds for one owner at a time until the lease expires or is released.
    * Failures raise :class:`~aims_snaptrade.errors.SnapTradeStoreError` (or a subclass).

    Attributes:
        kind: A short name (``"sqlite"``).
        persistent: ``False`` for ledgers that forget everything when the process exits.
    """

    kind: str
    persistent: bool

    def load_user(self, user_id: str) -> UserRecord | None:
        """The user's rows, or ``None`` when the ledger does not know the user."""
        ...

    def save_sync(self, outcome: SyncOutcome) -> None:
        """Record a finished user sync in one transaction.

        A ``leased`` outcome for a user the ledger no longer holds (erased while the sync ran)
        writes nothing: an erasure is never undone by a sync that started before it.
        """
        ...

    def mark(
        self,
        user_id: str,
        change: LedgerChange,
        at: float,
        account_id: str | None = None,
        connection_id: str | None = None,
    ) -> None:
        """Apply a webhook's change. A mark on an unknown account or connection asks for a listing."""
        ...

    def due_users(self, holdings_before: float, activities_before: float, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` user ids greater than ``after``, in order, with anything due or marked.

        Due: never listed, listed at or before ``holdings_before``, marked, or an active account
        whose holdings were fetched at or before ``holdings_before`` (or never), whose activities
        were fetched at or before ``activities_before`` (or never), or which is marked dirty.
        """
        ...

    def acquire_lease(self, user_id: str, owner: str, now: float, until: float) -> bool:
        """Take the user for ``owner`` until ``until`` unless another owner holds an unexpired lease."""
        ...

    def release_lease(self, user_id: str, owner: str) -> None:
        """Give the user back (only if ``owner`` still holds it)."""
        ...

    def finish_in_batch(self, batch_id: str, user_id: str, at: float) -> None:
        """Record that ``user_id`` is finished in batch ``batch_id`` (a resumed batch skips it)."""
        ...

    def finished_in_batch(self, batch_id: str, user_ids: Sequence[str]) -> set[str]:
        """Which of ``user_ids`` are finished in batch ``batch_id``."""
        ...

    def forget_batch(self, batch_id: str) -> int:
        """Drop a batch's progress; returns how many users it had finished."""
        ...

    def forget_user(self, user_id: str) -> int:
        """Drop every row about the user (its record, accounts and batch progress): erasure.

        Returns how many rows were removed (0 for a user the ledger never saw).
        """
        ...

    def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...
