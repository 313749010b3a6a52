"""Batch sync over many users: bounded concurrency, inside the budget, streamed, resumable.

``concurrency`` users are synced at once; each user's requests go one after another, and every
request takes its slot from the client's rate limiter, so the whole batch runs at the budget's
pace (zero 429s) and users take turns at it in the order they were given. A user's failure is a
result, never an exception that stops the batch. Results are streamed (an async iterator, or an
``on_result`` callback): nothing but counters is kept, so memory stays flat however many users.

With a ``batch_id`` the batch is resumable: each finished user is recorded in the ledger, and a
rerun with the same id (after a crash, a deploy, a SIGKILL) skips them without a request, and
tries the users that failed again. The
batch id also owns the users' leases, so a rerun takes over the users its predecessor was
syncing when it died: run one process per batch id at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.pipeline import Flow, StoreCall
from aims_snaptrade.sync.flow import LEDGER, SnapTradeSyncInProgressError, _counted, sync_portfolio
from aims_snaptrade.sync.snapshot import PortfolioSnapshot, SyncFailure

if TYPE_CHECKING:
    from aims_snaptrade.client import AsyncSafeSnapTradeClient

__all__ = ["BatchSummary", "SyncProgress", "UserSyncResult", "stream_sync", "sync_users"]

_CHUNK = 200
_BAD_ID = "user_id must be a non-empty string"
_ZERO = {"synced": 0, "failed": 0, "skipped": 0, "requests": 0}


@dataclass(frozen=True, slots=True)
class UserSyncResult:
    """One user's outcome in a batch.

    Attributes:
        user_id: The user.
        snapshot: What was fetched (``None`` when the sync failed or was skipped).
        error: Why the user's sync failed (``None`` otherwise).
        skipped: ``"finished"`` (already done in this batch before a restart) or ``"busy"``
            (another worker holds the user's lease); ``None`` when the user was synced.
        requests: Requests sent for this user, retries included.
    """

    user_id: str
    snapshot: PortfolioSnapshot | None = None
    error: SyncFailure | None = None
    skipped: Literal["finished", "busy"] | None = None
    requests: int = 0

    @property
    def ok(self) -> bool:
        """True when the user was synced (some accounts may still be stale or failed: see the snapshot)."""
        return self.snapshot is not None


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Where a batch stands (passed to ``on_progress`` after every user).

    Attributes:
        done: Users finished (synced, failed or skipped).
        synced / failed / skipped: The split of ``done``.
        total: Users in the batch, when known.
        requests: Requests sent so far.
        elapsed: Seconds since the batch started.
        budget_use: The share of the customer budget the batch's requests took: its requests over
            what the budget allows in the elapsed time (``limit`` per window, the first window
            whole, as a fresh window lets ``limit`` requests go at once). Between 0 and 1 while
            the limiter holds; other clients' requests on the same budget are not counted.
        eta_seconds: Estimated seconds left, when ``total`` is known and a user is done.
    """

    done: int
    synced: int
    failed: int
    skipped: int
    total: int | None
    requests: int
    elapsed: float
    budget_use: float
    eta_seconds: float | None

    @property
    def users_per_second(self) -> float:
        """Users finished per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """The totals of a finished batch (the last :class:`SyncProgress`, plus the batch id)."""

    batch_id: str | None
    progress: SyncProgress

    @property
    def failed(self) -> int:
        """Users whose sync failed."""
        return self.progress.failed


Sink = Callable[[UserSyncResult], Awaitable[None] | None]
ProgressCallback = Callable[[SyncProgress], Awaitable[None] | None]


def _store(method: str, *args: Any) -> Flow[Any]:
    return (yield StoreCall(method, args, store=LEDGER))


async def _call(callback: Callable[[Any], Any] | None, value: Any) -> None:
    if callback is not None:
        outcome = callback(value)
        if inspect.isawaitable(outcome):
            await outcome


async def _aiter_ids(user_ids: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(user_ids, AsyncIterable):
        async for user_id in user_ids:
            yield user_id
    else:
        for user_id in user_ids:
            yield user_id


async def stream_sync(
    client: AsyncSafeSnapTradeClient,
    user_ids: Iterable[str] | AsyncIterable[str],
    *,
    concurrency: int = 16,
    batch_id: str | None = None,
    force: bool = False,
    total: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> AsyncIterator[UserSyncResult]:
    """Sync ``user_ids`` and yield each :class:`UserSyncResult` as it is ready (completion order)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise SnapTradeValidationError(f"concurrency must be a positive integer, got {concurrency!r}.")
    if batch_id is not None and (not isinstance(batch_id, str) or not batch_id.strip()):
        raise SnapTradeValidationError("batch_id must be a non-empty string or None.")
    if total is None and isinstance(user_ids, Sized):
        total = len(user_ids)
    client._open_ledger()
    work: asyncio.Queue[str | None] = asyncio.Queue(maxsize=concurrency * 2)
    results: asyncio.Queue[UserSyncResult | None] = asyncio.Queue(maxsize=concurrency * 2)
    budget = (client.settings.customer_limit, client.settings.customer_limit_window)
    started = time.monotonic()
    counts = {"synced": 0, "failed": 0, "skipped": 0, "requests": 0}

    async def feed() -> None:
        chunk: list[str] = []

        async def flush() -> None:
            finished: set[str] = set()
            if batch_id is not None:
                finished = await client._run(_store("finished_in_batch", batch_id, list(chunk)))
            for user_id in chunk:
                if user_id in finished:
                    await results.put(UserSyncResult(user_id, skipped="finished"))
                else:
                    await work.put(user_id)
            chunk.clear()

        try:
            async for user_id in _aiter_ids(user_ids):
                if not isinstance(user_id, str) or not user_id.strip():
                    await results.put(
                        UserSyncResult(
                            str(user_id),
                            error=SyncFailure(
                                type="SnapTradeValidationError", message="user_id must be a non-empty string"
                            ),
                        )
                    )
                    continue
                chunk.append(user_id)
                if len(chunk) >= _CHUNK:
                    await flush()
            await flush()
        finally:
            for _ in range(concurrency):
                await work.put(None)

    async def sync_one(user_id: str) -> UserSyncResult:
        sent = [0]
        owner = f"batch:{batch_id}" if batch_id is not None else None
        sync = sync_portfolio(client._core, user_id, policy=client.sync_policy, force=force, lease_owner=owner)
        flow = _counted(sync, sent)
        try:
            snapshot = await client._run(flow)
        except SnapTradeSyncInProgressError:
            return UserSyncResult(user_id, skipped="busy", requests=sent[0])
        except Exception as exc:  # a user's failure is a result; the batch goes on
            result = UserSyncResult(user_id, error=SyncFailure.from_error(exc), requests=sent[0])
        else:
            result = UserSyncResult(
                user_id, snapshot=snapshot.model_copy(update={"requests": sent[0]}), requests=sent[0]
            )
        if batch_id is not None and result.ok:
            # Only synced users are finished: a rerun of the batch tries the failed ones again.
            await client._run(_store("finish_in_batch", batch_id, user_id, time.time()))
        return result

    async def worker() -> None:
        while (user_id := await work.get()) is not None:
            await results.put(await sync_one(user_id))

    async def run() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(feed())
                for _ in range(concurrency):
                    group.create_task(worker())
        finally:
            await results.put(None)

    runner = asyncio.create_task(run())
    try:
        while (result := await results.get()) is not None:
            key = "skipped" if result.skipped else "synced" if result.ok else "failed"
            counts[key] += 1
            counts["requests"] += result.requests
            if on_progress is not None:
                await _call(on_progress, _progress(counts, total, started, budget))
            yield result
        await runner  # re-raise what broke the batch itself (the ledger, the user id source)
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


def _progress(counts: dict[str, int], total: int | None, started: float, budget: tuple[int, float]) -> SyncProgress:
    elapsed = time.monotonic() - started
    done = counts["synced"] + counts["failed"] + counts["skipped"]
    eta = None
    if total is not None and done:
        eta = max(0.0, elapsed / done * (total - done))
    limit, window = budget
    # A rate (requests / elapsed / limit per second) overstates a short batch many times over: a
    # fresh window lets ``limit`` requests go at once. What the budget allowed is the measure.
    use = counts["requests"] / (limit * (math.floor(elapsed / window) + 1))
    return SyncProgress(
        done=done,
        synced=counts["synced"],
        failed=counts["failed"],
        skipped=counts["skipped"],
        total=total,
        requests=counts["requests"],
        elapsed=elapsed,
        budget_use=use,
        eta_seconds=eta,
    )


async def sync_users(
    client: AsyncSafeSnapTradeClient,
    user_ids: Iterable[str] | AsyncIterable[str],
    *,
    concurrency: int = 16,
    batch_id: str | None = None,
    force: bool = False,
    total: int | None = None,
    on_result: Sink | None = None,
    on_progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Sync every user of ``user_ids``; results go to ``on_result``; returns the totals."""
    last: list[SyncProgress] = []

    async def progress(value: SyncProgress) -> None:
        last[:] = [value]
        await _call(on_progress, value)

    async for result in stream_sync(
        client, user_ids, concurrency=concurrency, batch_id=batch_id, force=force, total=total, on_progress=progress
    ):
        await _call(on_result, result)
    return BatchSummary(
        batch_id,
        last[0]
        if last
        else _progress({"synced": 0, "failed": 0, "skipped": 0, "requests": 0}, 0, time.monotonic(), (1, 1.0)),
    )


async def due_user_ids(client: AsyncSafeSnapTradeClient, *, page: int = 500) -> AsyncIterator[str]:
    """Every user the ledger has something due or marked for, in user id order, a page at a time."""
    holdings_before, activities_before = client.sync_policy.due_before(time.time())
    after: str | None = None
    while True:
        ids: list[str] = await client._run(_store("due_users", holdings_before, activities_before, after, page))
        for user_id in ids:
            yield user_id
        if len(ids) < page:
            return
        after = ids[-1]
