"""Portfolio-sync benchmark: 10,000 users inside a shrunk customer window.

An emulator runs in its own process (so the figures are the client's), seeded with N users of
one account each, and enforces a customer limit of L requests per rolling W seconds. This process
syncs every user with ``AsyncSafeSnapTradeClient.sync_users`` (budget L per W, the same window)
and reports:

* **elapsed over the floor**: under "L per W" the (i + L)-th request arrives at least W after the
  i-th, so R requests need at least ``floor((R - 1) / L) x W`` seconds after the first one; the
  ratio of the measured span to that floor (target <= 1.05);
* **429s** (target 0);
* **requests per user per day** under the default polling policy (4 holdings refreshes, 1
  activities fetch), with webhooks marking a share of the accounts instead of polling, and for a
  naive full poll (everything, with the whole activity history, 4 times a day), measured on a
  sample of users by replaying a day's passes;
* **peak RSS** of this process (target < 150 MB).

    python benchmarks/portfolio_sync.py [--users 10000] [--limit 1000] [--window 5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import time
import uuid
from typing import Any


def serve(users: int, limit: int, window: float, conn: Any) -> None:
    """The emulator process: seed, report credentials, then answer journal questions until told to stop."""
    from aims_snaptrade.testing import RateLimit, SnapTradeEmulator
    from aims_snaptrade.testing.config import ClientCredentials

    # A client id of its own keeps this run's budget keys apart from anyone else's in Redis.
    key = ClientCredentials(f"BENCH-{uuid.uuid4().hex[:12]}", "benchmark-consumer-key-000000000000000000")
    limits = {"customer_rate_limit": RateLimit(limit, window), "clients": (key,), "journal_size": 10_000_000}
    with SnapTradeEmulator(**limits) as emu:
        seeded = emu.seed_users(users, prefix="bench")
        conn.send((emu.base_url, emu.client_id, emu.consumer_key, [(u.user_id, u.user_secret) for u in seeded]))
        while True:
            (command,) = conn.recv()
            if command == "stop":
                return
            if command == "clear":
                emu.journal.clear()
                conn.send(None)
            elif command == "figures":
                entries = emu.journal.entries()
                times = sorted(e.time for e in entries if e.status is not None)
                conn.send((len(entries), sum(1 for e in entries if e.status == 429), times[0], times[-1]))
            elif command == "count":
                conn.send(len(emu.journal))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sample", type=int, default=200, help="users replaying a day for the per-day figures")
    parser.add_argument("--storage", default="redis://127.0.0.1:6379/0", help="rate-limit storage shared by the passes")
    args = parser.parse_args()

    from aims_snaptrade import AsyncSafeSnapTradeClient
    from aims_snaptrade.secrets import MemorySecretStore
    from aims_snaptrade.sync import SQLiteSyncLedger, SyncPolicy

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(args.users, args.limit, args.window, child))
    server.start()
    base_url, client_id, key, credentials = parent.recv()
    secrets = MemorySecretStore()
    for user_id, secret in credentials:
        secrets.put(user_id, secret)
    ids = [user_id for user_id, _ in credentials]
    del credentials

    def settings(**extra: Any) -> dict[str, Any]:
        return {
            "client_id": client_id, "consumer_key": key, "environment": "sandbox", "base_url": base_url,
            "consent_required": False, "secret_store": secrets, "customer_limit": args.limit,
            "customer_limit_window": args.window, "rate_limit_max_wait": 600,
            "rate_limit_storage_url": args.storage, **extra,
        }  # fmt: skip

    async def batch(user_ids: list[str], ledger: Any, policy: SyncPolicy | None = None, due: bool = False) -> int:
        async with AsyncSafeSnapTradeClient(**settings(sync_ledger=ledger, sync_policy=policy)) as client:
            if due:
                summary = await client.sync_due(concurrency=args.concurrency)
            else:
                summary = await client.sync_users(user_ids, concurrency=args.concurrency)
            assert summary.progress.failed == 0, summary
            return summary.progress.requests

    # 1. The whole population, once, as fast as the budget allows.
    started = time.monotonic()
    requests = asyncio.run(batch(ids, SQLiteSyncLedger(":memory:")))
    elapsed = time.monotonic() - started
    parent.send(("figures",))
    served, throttled, first, last = parent.recv()
    floor = (served - 1) // args.limit * args.window
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # 2. A day on a sample: first sync, three holdings-only refreshes, one refresh with activities.
    time.sleep(args.window)  # let the window drain
    sample = ids[: args.sample]
    ledger = SQLiteSyncLedger(":memory:")
    asyncio.run(batch(sample, ledger))
    holdings_only = SyncPolicy(holdings_per_day=1e9, activities_per_day=1e-9)
    everything = SyncPolicy(holdings_per_day=1e9, activities_per_day=1e9)
    day = sum(asyncio.run(batch(sample, ledger, holdings_only)) for _ in range(3))
    day += asyncio.run(batch(sample, ledger, everything))
    # Webhooks instead of polling: 5% of the accounts change (holdings) once a day.
    marked = sample[::20]

    async def mark_and_sync() -> int:
        async with AsyncSafeSnapTradeClient(**settings(sync_ledger=ledger)) as client:
            for user_id in marked:
                record = ledger.load_user(user_id)
                assert record is not None
                await client.mark_from_webhook(
                    {
                        "eventType": "ACCOUNT_HOLDINGS_UPDATED",
                        "userId": user_id,
                        "accountId": record.accounts[0].account_id,
                    }
                )
        return await batch(sample, ledger, due=True)

    webhook_day = asyncio.run(mark_and_sync())
    # Naive full poll: everything with the whole history, 4 times a day.
    naive = sum(asyncio.run(batch(sample, SQLiteSyncLedger(":memory:"))) for _ in range(4))
    parent.send(("figures",))
    _, throttled_later, _, _ = parent.recv()
    parent.send(("stop",))
    server.join(30)

    print(f"users                     {args.users:,} (one account each), window {args.limit} per {args.window:g} s")
    print(f"requests                  {served:,} served, {throttled} x 429")
    print(f"elapsed                   {elapsed:.1f} s (first to last request {last - first:.1f} s)")
    print(f"budget floor              {floor:.1f} s -> elapsed / floor = {(last - first) / floor:.3f} (target <= 1.05)")
    print(f"peak RSS                  {peak_mb:.0f} MB (target < 150 MB)")
    print(
        f"requests per user per day default policy: {day / len(sample):.1f}; "
        f"webhooks (5% of accounts change): {webhook_day / len(sample):.2f}; "
        f"naive full poll x4: {naive / len(sample):.1f} "
        f"(policy / naive = {day / naive:.2f})"
    )
    print(f"(client-side count of the first pass: {requests:,} requests; 429s over every pass: {throttled_later})")


if __name__ == "__main__":
    main()
