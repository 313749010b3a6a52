"""Client overhead: aims-snaptrade against the raw official SDK, measured in the same run.

The emulator runs in its own process (so its CPU is not billed to the client); both clients call
``list_all_user_accounts`` for the same user. Printed: wall-clock throughput and client CPU per
call for each, and the ratio ours/raw. Bounded: a fixed number of calls, loopback only.

    python benchmarks/client_overhead.py [--calls 2000] [--concurrency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

SERVER = """
import json, sys, threading
from aims_snaptrade.testing import SnapTradeEmulator
with SnapTradeEmulator(customer_rate_limit=None, account_rate_limit=None, journal_size=1000) as emu:
    user = emu.connect("bench-user")
    print(json.dumps({"base_url": emu.base_url, "client_id": emu.client_id, "consumer_key": emu.consumer_key,
                      "user_id": user.user_id, "user_secret": user.user_secret}), flush=True)
    sys.stdin.read()
"""


def _measure_sync(calls: int, fn: Callable[[], Any]) -> tuple[float, float]:
    fn()  # warm up: connection, imports
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    return calls / (time.perf_counter() - wall), (time.process_time() - cpu) / calls * 1e6


async def _timed_async(calls: int, concurrency: int, fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    await fn()  # warm up
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await fn()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return calls / (time.perf_counter() - wall), (time.process_time() - cpu) / calls * 1e6


def _row(label: str, ours: tuple[float, float], raw: tuple[float, float]) -> None:
    print(
        f"{label:<7} raw SDK {raw[0]:8.0f} calls/s {raw[1]:7.0f} us CPU/call | "
        f"aims-snaptrade {ours[0]:8.0f} calls/s {ours[1]:7.0f} us CPU/call | "
        f"throughput ratio {ours[0] / raw[0]:.2f}, CPU ratio {ours[1] / raw[1]:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()

    from snaptrade_client.auth import SnapTradeAuth
    from snaptrade_client.client import SnapTrade

    from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient
    from aims_snaptrade.secrets import MemorySecretStore

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        user, secret = info["user_id"], info["user_secret"]
        auth = SnapTradeAuth.commercial_api_key(consumer_key=info["consumer_key"], client_id=info["client_id"])
        store = MemorySecretStore()
        store.put(user, secret)
        options = {
            "client_id": info["client_id"],
            "consumer_key": info["consumer_key"],
            "environment": "sandbox",
            "base_url": info["base_url"],
            "secret_store": store,
            "customer_limit": 1_000_000,
            "rate_limit_strategy": "sliding-window",
        }

        raw_sync = SnapTrade(host=info["base_url"], auth=auth)
        raw = _measure_sync(
            args.calls, lambda: raw_sync.account_information.list_all_user_accounts(user_id=user, user_secret=secret)
        )
        with SafeSnapTradeClient(**options) as client:
            ours = _measure_sync(args.calls, lambda: client.call("list_all_user_accounts", user_id=user))
        _row("sync", ours, raw)

        raw_async_sdk = SnapTrade(host=info["base_url"], auth=auth)
        raw_a = asyncio.run(
            _timed_async(
                args.calls,
                args.concurrency,
                lambda: raw_async_sdk.account_information.alist_all_user_accounts(user_id=user, user_secret=secret),
            )
        )

        async def ours_async() -> tuple[float, float]:
            async with AsyncSafeSnapTradeClient(**options) as aclient:
                return await _timed_async(
                    args.calls, args.concurrency, lambda: aclient.call("list_all_user_accounts", user_id=user)
                )

        ours_a = asyncio.run(ours_async())
        _row(f"async/{args.concurrency}", ours_a, raw_a)
        print(f"({args.calls} calls each; emulator in its own process on loopback)")
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
