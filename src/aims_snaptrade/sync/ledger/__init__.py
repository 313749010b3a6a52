"""Sync ledgers: per-account sync progress, leases and batch progress (see docs/portfolio-sync.md).

Open one from a URL (:func:`open_sync_ledger`) or build a class directly. Plug in your own by
implementing :class:`SyncLedger`, registering its factory in the ``aims_snaptrade.sync_ledgers``
entry-point group and running
:class:`aims_snaptrade.testing.sync_ledger_conformance.SyncLedgerConformance` against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aims_snaptrade.sync.ledger.factory import open_sync_ledger
from aims_snaptrade.sync.ledger.protocol import SyncLedger
from aims_snaptrade.sync.ledger.sqlite import SQLiteSyncLedger

if TYPE_CHECKING:
    from aims_snaptrade.sync.ledger.postgres import PostgresSyncLedger

__all__ = ["PostgresSyncLedger", "SQLiteSyncLedger", "SyncLedger", "open_sync_ledger"]


def __getattr__(name: str) -> Any:
    if name == "PostgresSyncLedger":
        from aims_snaptrade.sync.ledger.postgres import PostgresSyncLedger

        return PostgresSyncLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
