"""Batch sync over many users: bounded concurrency, inside the budget, streamed, resumable.

``concurrency`` users are synced at once; each user's requests go one after another, and every
request takes its slot from the client's rate limiter, so the whole batch runs at the budget's
pace (zero 429s) and users take turns at it in the order they were given. A user's failure is a
result, never an exception that stops the batch. Results are streamed (an async iterator, or an
``on_result`` callback): nothing but counters is kept, so memory stays flat however many users.

With a ``batch_id`` the batch is resumable: each finished user is recorded in the ledger once its
result has been handed to the consumer (``on_result`` returned, or the stream's consumer asked for
the next result), so a sink that writes durably never loses a finished user's result; a rerun with
the same id (after a crash, a deploy, a SIGKILL) skips the finished users without a request, and
tries the users that failed again. A batch starts with one user alone, so that SnapTrade's
``X-RateLimit-*`` answers tell the budget what another process spent of the window before the
other workers send (see docs/portfolio-sync.md, resuming). The
batch id also owns the users' leases, so a rerun takes over the users its predecessor was
syncing when it died: run one process per batch id at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.pipeline import Flow, StoreCall
from aims_snaptrade.sync.flow import LEDGER, SnapTradeSyncInProgressError, _counted, sync_portfolio
from aims_snaptrade.sync.policy import SyncPolicy
from aims_snaptrade.sync.records import UserRecord
from aims_snaptrade.sync.snapshot import PortfolioSnapshot, SyncFailure

if TYPE_CHECKING:
    from aims_snaptrade.pipeline import Core
    from aims_snaptrade.settings import Settings

__all__ = [
    "DEFAULT_SETTLE_SECONDS",
    "BatchSummary",
    "SyncProgress",
    "SyncShell",
    "UserSyncResult",
    "due_user_ids",
    "stream_sync",
    "sync_users",
]

_T = TypeVar("_T")


class SyncShell(Protocol):
    """What a batch needs of the shell that performs its flows: the core the flows are built on,
    the settings and sync policy, and the shell's own ``_run`` (perform a flow's effects) and
    ``_open_ledger``. :class:`~aims_snaptrade.AsyncSafeSnapTradeClient` is one; the batch never
    imports it (flows and the runners over them are built from the core, docs/architecture.md).
    """

    _core: Core

    @property
    def settings(self) -> Settings: ...

    @property
    def sync_policy(self) -> SyncPolicy: ...

    async def _run(self, flow: Flow[_T]) -> _T: ...

    def _open_ledger(self) -> object: ...


log = logging.getLogger("aims_snaptrade.sync")

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
    client: SyncShell,
    user_ids: Iterable[str] | AsyncIterable[str],
    *,
    concurrency: int = 16,
    batch_id: str | None = None,
    force: bool = False,
    total: int | None = None,
    on_progress: ProgressCallback | None = None,
    cold_start_wait: float | None = None,
) -> AsyncIterator[UserSyncResult]:
    """Sync ``user_ids`` and yield each :class:`UserSyncResult` as it is ready (completion order).

    ``cold_start_wait``: seconds to send nothing before the first request, because another process
    (this batch's crashed predecessor) may have spent SnapTrade's window and a budget in process
    memory cannot know it. ``None`` (the default) waits one customer window
    (``customer_limit_window``) for a resumable batch (``batch_id``) on a budget that is not shared
    (``memory://``), and not at all otherwise; with a shared (Redis) budget the storage knows.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise SnapTradeValidationError(f"concurrency must be a positive integer, got {concurrency!r}.")
    if batch_id is not None and (not isinstance(batch_id, str) or not batch_id.strip()):
        raise SnapTradeValidationError("batch_id must be a non-empty string or None.")
    if total is None and isinstance(user_ids, Sized):
        total = len(user_ids)
    wait = cold_start_wait_for(client, batch_id, cold_start_wait)
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
        return result

    # A new process cannot know what another process (a crashed predecessor, another batch) spent
    # of SnapTrade's window. So the first user is synced alone: its answers carry SnapTrade's
    # X-RateLimit-* counts, which the budget takes in (rate-limit feedback) before the other
    # workers send anything. With a shared (Redis) budget this costs one user's latency.
    primed = asyncio.Event()

    async def worker(first: bool) -> None:
        if not first:
            await primed.wait()
        while (user_id := await work.get()) is not None:
            try:
                result = await sync_one(user_id)
            finally:
                primed.set()
            await results.put(result)
        primed.set()

    async def run() -> None:
        try:
            if wait > 0:
                log.info(
                    "Batch %s: sending nothing for %.1f s (a window another process may have spent).", batch_id, wait
                )
                await asyncio.sleep(wait)
            async with asyncio.TaskGroup() as group:
                group.create_task(feed())
                for n in range(concurrency):
                    group.create_task(worker(first=n == 0))
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
            if batch_id is not None and result.ok and result.skipped is None:
                # Recorded finished only once the consumer has taken the result (the sink wrote
                # and flushed it): a crash before this leaves the user to the rerun, never a user
                # recorded finished whose result is lost. Failed users are not finished: a rerun
                # tries them again.
                await client._run(_store("finish_in_batch", batch_id, result.user_id, time.time()))
        await runner  # re-raise what broke the batch itself (the ledger, the user id source)
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


def cold_start_wait_for(client: SyncShell, batch_id: str | None, given: float | None) -> float:
    """Seconds a batch sends nothing before its first request (see :func:`stream_sync`'s ``cold_start_wait``)."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int | float) or not 0 <= given < float("inf"):
            raise SnapTradeValidationError(f"cold_start_wait must be a number of seconds >= 0, got {given!r}.")
        return float(given)
    shared = not client.settings.rate_limit_storage_url.startswith("memory:")
    if batch_id is None or shared:
        return 0.0
    return float(client.settings.customer_limit_window)


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
    client: SyncShell,
    user_ids: Iterable[str] | AsyncIterable[str],
    *,
    concurrency: int = 16,
    batch_id: str | None = None,
    force: bool = False,
    total: int | None = None,
    on_result: Sink | None = None,
    on_progress: ProgressCallback | None = None,
    cold_start_wait: float | None = None,
) -> BatchSummary:
    """Sync every user of ``user_ids``; results go to ``on_result``; returns the totals (see :func:`stream_sync`)."""
    last: list[SyncProgress] = []

    async def progress(value: SyncProgress) -> None:
        last[:] = [value]
        await _call(on_progress, value)

    async for result in stream_sync(
        client,
        user_ids,
        concurrency=concurrency,
        batch_id=batch_id,
        force=force,
        total=total,
        on_progress=progress,
        cold_start_wait=cold_start_wait,
    ):
        await _call(on_result, result)
    return BatchSummary(
        batch_id,
        last[0]
        if last
        else _progress({"synced": 0, "failed": 0, "skipped": 0, "requests": 0}, 0, time.monotonic(), (1, 1.0)),
    )


DEFAULT_SETTLE_SECONDS = 5.0
"""How long a user's newest webhook mark must be old before a worker syncs it.

SnapTrade sends a burst of webhooks for one change (8 for one completed portal link); waiting for
the burst to end lets one sync cover all of it (the marks coalesce in the user's ledger rows)
instead of a sync per webhook, or a second sync for the marks that arrived during the first."""


def newest_mark(record: UserRecord | None) -> float | None:
    """When a webhook last marked anything of the user (``None``: nothing is marked)."""
    if record is None:
        return None
    times = [record.dirty_at] + [t for a in record.accounts for t in (a.holdings_dirty_at, a.activities_dirty_at)]
    marked = [t for t in times if t is not None]
    return max(marked) if marked else None


def due_page(
    policy: SyncPolicy, after: str | None, page: int, settle_seconds: float, deferred: list[str] | None = None
) -> Flow[tuple[list[str], str | None]]:
    """One page of due users: those whose marks have settled, and where the next page starts.

    Users whose newest mark is younger than ``settle_seconds`` are left for a later pass (and
    appended to ``deferred``); ``None`` as the second value means there is no next page.
    """
    now = time.time()
    holdings_before, activities_before = policy.due_before(now)
    ids: list[str] = yield from _store("due_users", holdings_before, activities_before, after, page)
    ready = ids
    if settle_seconds > 0:
        ready = []
        for user_id in ids:
            marked_at = newest_mark((yield from _store("load_user", user_id)))
            if marked_at is not None and marked_at > now - settle_seconds:
                if deferred is not None:
                    deferred.append(user_id)
                continue
            ready.append(user_id)
    return ready, (ids[-1] if len(ids) >= page else None)


async def due_user_ids(
    client: SyncShell,
    *,
    page: int = 500,
    settle_seconds: float = 0.0,
    deferred: list[str] | None = None,
) -> AsyncIterator[str]:
    """Every user the ledger has something due or marked for, in user id order, a page at a time.

    A user marked less than ``settle_seconds`` ago is skipped (and listed in ``deferred``): the
    rest of its webhook burst is probably on its way, and the next pass syncs it once.
    """
    after: str | None = None
    while True:
        ids, after = await client._run(due_page(client.sync_policy, after, page, settle_seconds, deferred))
        for user_id in ids:
            yield user_id
        if after is None:
            return
