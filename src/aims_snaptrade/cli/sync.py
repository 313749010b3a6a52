"""``aims-snaptrade sync``: batch portfolio sync from a shell, with a progress bar.

Users come from a file (one id per line, ``-`` for stdin) or from the ledger (``--due``: the due
users are listed first, so the total is known and the batch is exactly the users due when it
started). The bar shows users done, users per second, the share of the customer budget the batch
used (its requests over what the budget allowed in the time, so at most 100%), failures and the
ETA; it needs ``rich`` (``pip install 'aims-snaptrade[progress]'``), else a line is printed every
few seconds. The closing lines name the users that failed, with the error's type (the first
:data:`NAMED_FAILURES`; ``--results`` has every one). ``--results`` appends one JSON line per user
(the sink). Exit status: 0 when every user synced, 1 when some failed, 2 on bad usage or
configuration.

Each result line is flushed and fsynced before the user is recorded finished in the batch, so a
rerun of a killed batch (same ``--batch-id``) finds every finished user's result in the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aims_snaptrade.errors import SnapTradeConfigurationError

if TYPE_CHECKING:
    from aims_snaptrade.sync.batch import SyncProgress, UserSyncResult

__all__ = ["NAMED_FAILURES", "add_sync_command", "run_sync_command"]

NAMED_FAILURES = 20
"""How many failed users the closing lines name (``--results`` lists them all)."""


def add_sync_command(commands: Any) -> None:
    """Add the ``sync`` sub-command to the CLI's sub-parsers."""
    sync = commands.add_parser("sync", help="sync many users' portfolios within the rate budget, with progress")
    source = sync.add_mutually_exclusive_group(required=True)
    source.add_argument("--users", metavar="FILE", help="file of user ids, one per line ('-': stdin)")
    source.add_argument("--due", action="store_true", help="every user with anything due or webhook-marked")
    sync.add_argument("--batch-id", help="resumable batch: a rerun with the same id skips finished users")
    sync.add_argument("--concurrency", type=int, default=16, help="users synced at once (default 16)")
    sync.add_argument("--force", action="store_true", help="fetch everything, whatever the polling policy says")
    sync.add_argument("--results", metavar="FILE", help="append one JSON line per user to FILE")
    sync.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    sync.set_defaults(handler=run_sync_command)


def _user_ids(path: str) -> tuple[Iterator[str], int | None]:
    if path == "-":
        return (line.strip() for line in sys.stdin if line.strip()), None
    file = Path(path)
    if not file.is_file():
        raise SnapTradeConfigurationError(f"--users {path!r} is not a readable file of user ids")
    with file.open(encoding="utf-8") as counting:
        total = sum(1 for line in counting if line.strip())

    def lines() -> Iterator[str]:
        with file.open(encoding="utf-8") as source:
            yield from (line.strip() for line in source if line.strip())

    return lines(), total


def _describe(p: SyncProgress) -> str:
    eta = "-" if p.eta_seconds is None else time.strftime("%H:%M:%S", time.gmtime(p.eta_seconds))
    total = "?" if p.total is None else str(p.total)
    return (
        f"sync {p.done}/{total} users, {p.users_per_second:.1f} users/s, budget {p.budget_use:.0%}, "
        f"failed {p.failed}, skipped {p.skipped}, ETA {eta}"
    )


def _progress_display(stack: ExitStack, total: int | None, quiet: bool) -> Callable[[SyncProgress], None]:
    if quiet:
        return lambda p: None
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    except ImportError:
        last = [0.0]

        def line(p: SyncProgress) -> None:
            if time.monotonic() - last[0] >= 2.0 or p.done == p.total:
                last[0] = time.monotonic()
                print(_describe(p), file=sys.stderr, flush=True)

        return line
    bar = stack.enter_context(
        Progress(
            TextColumn("sync"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} users/s  budget {task.fields[budget]:.0%}"),
            TextColumn("failed {task.fields[failed]}  ETA {task.fields[eta]}"),
            transient=False,
        )
    )
    task = bar.add_task("sync", total=total, rate=0.0, budget=0.0, failed=0, eta="-")

    def update(p: SyncProgress) -> None:
        eta = "-" if p.eta_seconds is None else time.strftime("%H:%M:%S", time.gmtime(p.eta_seconds))
        bar.update(task, completed=p.done, rate=p.users_per_second, budget=p.budget_use, failed=p.failed, eta=eta)

    return update


def _result_line(result: UserSyncResult) -> str:
    status = result.skipped or ("synced" if result.ok else "failed")
    line: dict[str, Any] = {"user_id": result.user_id, "status": status, "requests": result.requests}
    if result.error is not None:
        line["error"] = result.error.model_dump()
    if result.snapshot is not None:
        line["accounts"] = {a.account_id: a.state.value for a in result.snapshot.accounts}
    return json.dumps(line, sort_keys=True)


def run_sync_command(args: argparse.Namespace) -> int:
    """Run ``aims-snaptrade sync`` with parsed ``args``; returns the exit status."""
    from aims_snaptrade.client import AsyncSafeSnapTradeClient

    if args.concurrency < 1:
        raise SnapTradeConfigurationError(f"--concurrency must be at least 1, got {args.concurrency}")
    ids, total = (None, None) if args.due else _user_ids(args.users)
    failures: list[UserSyncResult] = []
    totals: list[int | None] = [total]

    async def run(sink: IO[str] | None, stack: ExitStack) -> SyncProgress:
        async with AsyncSafeSnapTradeClient.from_env() as client:

            def write(result: UserSyncResult) -> None:
                if not result.ok and not result.skipped:
                    failures.append(result)
                if sink is not None:
                    # Durable before the batch records the user finished (it does so once this
                    # returns): a SIGKILL can lose a result line only for a user the rerun syncs again.
                    sink.write(_result_line(result) + "\n")
                    sink.flush()
                    os.fsync(sink.fileno())

            source: Iterable[str] | None = ids
            if args.due:
                from aims_snaptrade.sync.batch import due_user_ids

                # Listed first: a known total, and a batch of exactly the users due now.
                await asyncio.to_thread(client._open_ledger)
                due = [user_id async for user_id in due_user_ids(client)]
                source, totals[0] = due, len(due)
            assert source is not None
            from aims_snaptrade.sync.batch import cold_start_wait_for

            wait = cold_start_wait_for(client, args.batch_id, None)
            if wait > 0:
                print(
                    f"batch {args.batch_id}: waiting {wait:g} s before the first request (a budget in process memory "
                    "cannot know what a crashed run spent of SnapTrade's window; a shared redis:// budget needs no "
                    "wait)",
                    file=sys.stderr,
                    flush=True,
                )
            show = _progress_display(stack, totals[0], args.no_progress)
            summary = await client.sync_users(
                source,
                total=totals[0],
                force=args.force,
                concurrency=args.concurrency,
                batch_id=args.batch_id,
                on_result=write,
                on_progress=show,
            )
            return summary.progress

    with ExitStack() as stack:
        sink = stack.enter_context(open(args.results, "a", encoding="utf-8")) if args.results else None
        final = asyncio.run(run(sink, stack))
    print(_describe(final).replace("sync ", "synced ", 1) + f", {final.requests} requests in {final.elapsed:.1f} s")
    for line in _failure_lines(failures, results=args.results):
        print(line)
    return 1 if final.failed else 0


def _failure_lines(failures: list[UserSyncResult], *, results: str | None) -> list[str]:
    """The closing lines that name the failed users (never a secret: errors are redacted)."""
    if not failures:
        return []
    named = [f"  {f.user_id}: {f.error.type if f.error else 'failed'}" for f in failures[:NAMED_FAILURES]]
    lines = [f"failed users ({len(failures)}):", *named]
    if len(failures) > NAMED_FAILURES:
        where = f"every one is in {results}" if results else "rerun with --results FILE for every one"
        lines.append(f"  ... and {len(failures) - NAMED_FAILURES} more ({where})")
    return lines
