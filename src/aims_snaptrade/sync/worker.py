"""``SyncWorker``: the worker path of webhook-driven sync for asyncio services without Celery.

The webhook handler only marks the ledger (``await client.mark_from_webhook(event)``: cheap,
idempotent, no SnapTrade request) and may call :meth:`SyncWorker.wake`; the worker runs
``client.sync_due`` in the background: at once when woken, else every ``interval`` seconds (the
polling policy's own due syncs ride along). Marks for one user coalesce in the ledger, and a user
marked less than ``settle_seconds`` ago waits for the next pass, so a burst of webhooks becomes one
sync. Run one worker per ledger, or several: the users' leases keep them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.redaction import scrub_exception
from aims_snaptrade.sync.batch import DEFAULT_SETTLE_SECONDS, BatchSummary, Sink, SyncShell, due_user_ids, sync_users

__all__ = ["DEFAULT_SYNC_INTERVAL", "SyncWorker"]

logger = logging.getLogger("aims_snaptrade.sync")

DEFAULT_SYNC_INTERVAL = 60.0
"""Seconds between two passes when nothing wakes the worker."""


def _seconds(name: str, value: object, *, zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (value >= 0 if zero else value > 0):
        raise SnapTradeValidationError(
            f"{name} must be a number of seconds {'>= 0' if zero else '> 0'}, got {value!r}."
        )
    if value == float("inf"):
        raise SnapTradeValidationError(f"{name} must be finite, got {value!r}.")
    return float(value)


class SyncWorker:
    """Runs ``client.sync_due`` in the background of an asyncio service.

    Args:
        client: The service's :class:`~aims_snaptrade.AsyncSafeSnapTradeClient` (its ledger must be
            the one the webhook handler marks).
        interval: Seconds between passes when nothing wakes the worker.
        settle_seconds: How old a user's newest mark must be before it is synced; while a pass
            left such users for later, the next pass comes after ``settle_seconds``.
        concurrency: Users synced at once in a pass.
        on_result: Called with each user's :class:`~aims_snaptrade.sync.UserSyncResult`.

    Use it as ``async with SyncWorker(client) as worker:`` (starts and stops the background task),
    or ``await worker.run()`` in a task of your own and ``worker.stop()``.
    """

    def __init__(
        self,
        client: SyncShell,
        *,
        interval: float = DEFAULT_SYNC_INTERVAL,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        concurrency: int = 16,
        on_result: Sink | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise SnapTradeValidationError(f"concurrency must be a positive integer, got {concurrency!r}.")
        self._client = client
        self.interval = _seconds("interval", interval, zero=False)
        self.settle_seconds = _seconds("settle_seconds", settle_seconds, zero=True)
        self.concurrency = concurrency
        self._on_result = on_result
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._deferred = False
        self.passes = 0
        """Passes finished so far."""
        self.last: BatchSummary | None = None
        """The totals of the last pass."""

    def wake(self) -> None:
        """Ask for a pass now (after a webhook marked the ledger). Safe from any thread."""
        with self._lock:
            loop = self._loop
        if loop is None:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Finish the current pass and stop. Safe from any thread."""
        self._stopping = True
        self.wake()

    async def run_once(self) -> BatchSummary:
        """One pass: sync every user with something due or marked (and settled)."""
        deferred: list[str] = []
        self._client._open_ledger()
        summary = await sync_users(
            self._client,
            due_user_ids(self._client, settle_seconds=self.settle_seconds, deferred=deferred),
            concurrency=self.concurrency,
            on_result=self._on_result,
        )
        self._deferred = bool(deferred)
        self.passes += 1
        self.last = summary
        return summary

    async def run(self) -> None:
        """Pass after pass until :meth:`stop`; a failed pass is logged and the next one tried."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
        self._deferred = False
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self.run_once()
                except Exception as exc:  # the ledger or the network: try again on the next pass
                    logger.error("A sync pass failed: %s", scrub_exception(exc))
                if self._stopping:
                    break
                wait = min(self.interval, max(self.settle_seconds, 0.05)) if self._deferred else self.interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
        finally:
            with self._lock:
                self._loop = None

    async def __aenter__(self) -> SyncWorker:
        self._stopping = False
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        if self._task is not None:
            await self._task
            self._task = None
