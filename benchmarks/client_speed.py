"""Client speed: aims-snaptrade against the raw official SDK, per call and at start-up, in one run.

A client's cost can only be measured against a server much faster than the client, so this
benchmark does not use the emulator (its own CPU would be measured): a minimal HTTP/1.1 server
runs in its own process and answers every request with the same canned ``list_all_user_accounts``
body (it checks nothing). Both clients list one user's accounts; ours through the typed
``list_accounts`` with the secret in its store and the rate limiter on, with a budget the run
cannot exhaust.

Printed, each with the raw SDK's figure beside it:

- sync: microseconds per call (``rounds`` x ``calls``), ratio ours/raw;
- async: calls per second with ``concurrency`` in flight, ratio ours/raw (goal >= 1.5) and ratio
  ours/ceiling (goal >= 0.8);
- beside each, the SDK's own method sent through the library's transport with no road at all:
  the floor (sync) and ceiling (async) of anything built on the SDK's methods;
- cold start: a fresh interpreter importing the client, building it and making the first call,
  median of ``--cold`` runs each (alternated), ratio ours/raw (goal <= 0.9);
- peak RSS: a fresh interpreter importing the client, building it and making ``--rss-calls``
  calls (200), then reading its own peak resident set size (``ru_maxrss``); median of ``--cold``
  runs each (alternated), ratio ours/raw (goal <= 1.15).

The goals are issue 29's (docs/performance.md).

Rounds of the clients are interleaved (raw, ours, transport alone, raw, ...) and a ratio is the
median of the rounds' ratios, so a machine's drift during the run hits every client alike. The
figures are also written as JSON (``--json PATH``). Bounded: fixed counts, loopback only.

    python benchmarks/client_speed.py [--calls 300] [--rounds 5] [--async-calls 2000] [--cold 7] [--rss-calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

USER_ID = "bench-user"
USER_SECRET = "bench-secret-0123456789"  # a made-up secret for a loopback server
CLIENT_ID = "BENCH"
CONSUMER_KEY = "bench-consumer-key"
RATE_LIMIT = 1_000_000  # the customer budget of the library's benchmark settings

ACCOUNT = {
    "kind": "investment",
    "connection_id": "5cd082a8-083f-5208-b8b6-2b1abe60f299",
    "masked_account_number": "****9475",
    "display_name": "Individual Brokerage",
    "institution_account_id": "91479475",
    "institution_id": "f8256340-f806-5ac4-a5d2-15efad1a143e",
    "opening_date": "2019-03-01T00:00:00Z",
    "raw_type": "Margin",
    "net_value": {"amount": 39077.9, "currency": "USD"},
    "sync_status": {
        "transactions": {
            "initial_sync_completed": True,
            "last_successful_sync": "2026-11-30",
            "first_transaction_date": "2021-11-24",
        },
        "orders": "2026-11-30T10:30:27.675853Z",
        "positions": "2026-11-30T10:30:27.675853Z",
        "balances": "2026-11-30T10:30:27.675853Z",
    },
    "is_paper": False,
    "funding_date": "2019-03-01T00:00:00Z",
    "cash_or_margin": "margin",
}
BODY = json.dumps({"results": [{**ACCOUNT, "id": f"2ade4cc6-f16f-50a6-ba0f-f827adbc2f9{i}"} for i in range(2)]})

# The server: asyncio protocol, keep-alive, pipelining-safe, one canned answer. It parses only
# what it must to find where each request ends (headers, then Content-Length bytes).
# With a second argument (a limit), every answer also carries SnapTrade's customer-level
# rate-limit headers, as the real API's do: the limit, what is left of it (the server counts the
# requests it answered) and the seconds until the window resets.
SERVER = r"""
import asyncio, sys
BODY = sys.argv[1].encode()
LIMIT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-ID: bench\r\n"
TAIL = b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
ANSWER = HEAD + TAIL
ANSWERED = [0]

def answer():
    if not LIMIT:
        return ANSWER
    ANSWERED[0] += 1
    left = max(0, LIMIT - ANSWERED[0])
    return (HEAD + b"X-RateLimit-Limit: %d\r\nX-RateLimit-Remaining: %d\r\nX-RateLimit-Reset: 60\r\n"
            % (LIMIT, left) + TAIL)

class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length:]
            out.append(answer())
        if out:
            self.transport.write(b"".join(out))

async def main():
    server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

# One cold start: a fresh interpreter; the figure is the whole process's wall time, measured
# by the parent (interpreter start, imports, client construction, first call, exit).
# What the floor/ceiling rows send: the operation, its SDK arguments and timeouts (set in main()).
OPERATION: Any = None
SENT: dict[str, str] = {}
TIMEOUTS: Any = None

COLD_RAW = """
import sys
from snaptrade_client import SnapTrade, SnapTradeAuth
auth = SnapTradeAuth.commercial_api_key(consumer_key=sys.argv[2], client_id=sys.argv[3])
sdk = SnapTrade(host=sys.argv[1], auth=auth)
for _ in range(int(sys.argv[6])):
    sdk.account_information.list_all_user_accounts(user_id=sys.argv[4], user_secret=sys.argv[5])
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
COLD_OURS = """
import sys
from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.secrets import MemorySecretStore
store = MemorySecretStore()
store.put(sys.argv[4], sys.argv[5])
with SafeSnapTradeClient(base_url=sys.argv[1], consumer_key=sys.argv[2], client_id=sys.argv[3],
                         environment="sandbox", secret_store=store) as client:
    for _ in range(int(sys.argv[6])):
        client.list_accounts(sys.argv[4])
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def client_options(base_url: str) -> dict[str, Any]:
    """The library's settings in every benchmark: the user's secret stored, a budget no run can exhaust.

    The sliding-window counter costs the same whatever the budget; a moving window of a million
    entries would be copied on every take.
    """
    from aims_snaptrade.secrets import MemorySecretStore

    store = MemorySecretStore()
    store.put(USER_ID, USER_SECRET)
    return {
        "client_id": CLIENT_ID,
        "consumer_key": CONSUMER_KEY,
        "environment": "sandbox",
        "base_url": base_url,
        "secret_store": store,
        "customer_limit": RATE_LIMIT,
        "rate_limit_strategy": "sliding-window",
    }


def _per_call_us(calls: int, rounds: int, clients: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    """Microseconds per call of each client, rounds interleaved (raw, ours, ...) so drift hits all alike."""
    for fn in clients.values():
        fn()  # warm up: connection, lazy imports
    figures: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, fn in clients.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            figures[name].append((time.perf_counter() - start) / calls * 1e6)
    return figures


async def _calls_per_s(
    calls: int, concurrency: int, rounds: int, clients: dict[str, Callable[[], Awaitable[Any]]]
) -> dict[str, list[float]]:
    """Calls per second of each client with ``concurrency`` in flight, rounds interleaved."""
    for fn in clients.values():
        await fn()  # warm up
    figures: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, fn in clients.items():
            gate = asyncio.Semaphore(concurrency)

            async def one(fn: Callable[[], Awaitable[Any]] = fn, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    await fn()

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(calls)))
            figures[name].append(calls / (time.perf_counter() - start))
    return figures


def _paired(ours: list[float], raw: list[float]) -> float:
    """The median of the rounds' ratios (each round's figures were measured side by side)."""
    return statistics.median(o / r for o, r in zip(ours, raw, strict=True))


def _summary(figures: dict[str, list[float]], unit: str, alone: str) -> dict[str, float]:
    """Medians of the raw SDK, the library and its transport ``alone``, with their paired ratios to the raw SDK."""
    raw, ours, transport = figures["raw"], figures["ours"], figures[alone]
    return {
        f"raw_{unit}": statistics.median(raw),
        f"ours_{unit}": statistics.median(ours),
        "ratio": _paired(ours, raw),
        f"transport_only_{unit}": statistics.median(transport),
        "transport_only_ratio": _paired(transport, raw),
    }


def _fresh(script: str, base_url: str, calls: int) -> tuple[float, int]:
    """One fresh interpreter making ``calls`` calls: its wall time (s) and its peak RSS (KiB, Linux's unit)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, base_url, CONSUMER_KEY, CLIENT_ID, USER_ID, USER_SECRET, str(calls)],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start, int(done.stdout.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="sync calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of sync calls and of async batches")
    parser.add_argument("--async-calls", type=int, default=2000, help="async calls per round")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--cold", type=int, default=7, help="fresh processes per client (median)")
    parser.add_argument("--rss-calls", type=int, default=200, help="calls before a fresh process reads its peak RSS")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from snaptrade_client import SnapTrade, SnapTradeAuth

    from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient
    from aims_snaptrade._transport import Timeouts
    from aims_snaptrade.operations import get_operation

    global OPERATION, SENT, TIMEOUTS
    OPERATION = get_operation("list_all_user_accounts")
    SENT = {"user_id": USER_ID, "user_secret": USER_SECRET}
    TIMEOUTS = Timeouts(5.0, 30.0)

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, BODY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base_url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        auth = SnapTradeAuth.commercial_api_key(consumer_key=CONSUMER_KEY, client_id=CLIENT_ID)
        options = client_options(base_url)
        results: dict[str, Any] = {"machine": f"{platform.machine()}, {platform.python_version()}"}

        raw_sdk = SnapTrade(host=base_url, auth=auth)
        with SafeSnapTradeClient(**options) as client:
            sync_figures = _per_call_us(
                args.calls,
                args.rounds,
                {
                    "raw": lambda: raw_sdk.account_information.list_all_user_accounts(
                        user_id=USER_ID, user_secret=USER_SECRET
                    ),
                    "ours": lambda: client.list_accounts(USER_ID),
                    # The floor: the SDK's own method through the library's transport, no road at all.
                    "floor": lambda: client._transport.send(OPERATION, SENT, TIMEOUTS),
                },
            )
        sync = results["sync_per_call"] = _summary(sync_figures, "us", "floor")
        print(
            f"sync, per call      raw SDK {sync['raw_us']:8.0f} us    aims-snaptrade {sync['ours_us']:8.0f} us"
            f"    ratio {sync['ratio']:.2f} (goal <= 1.10)"
        )
        print(
            f"  floor: the SDK's method through the library's transport alone {sync['transport_only_us']:8.0f} us"
            f"    ratio {sync['transport_only_ratio']:.2f}"
        )

        async def measure_async() -> dict[str, list[float]]:
            async with AsyncSafeSnapTradeClient(**options) as aclient:
                return await _calls_per_s(
                    args.async_calls,
                    args.concurrency,
                    args.rounds,
                    {
                        "raw": lambda: raw_sdk.account_information.alist_all_user_accounts(
                            user_id=USER_ID, user_secret=USER_SECRET
                        ),
                        "ours": lambda: aclient.list_accounts(USER_ID),
                        "ceiling": lambda: aclient._transport.send(OPERATION, SENT, TIMEOUTS),
                    },
                )

        async_figures = asyncio.run(measure_async())
        asy = results[f"async_{args.concurrency}_in_flight"] = _summary(async_figures, "calls_s", "ceiling")
        print(
            f"async, {args.concurrency} in flight raw SDK {asy['raw_calls_s']:8.0f} /s    "
            f"aims-snaptrade {asy['ours_calls_s']:8.0f} /s    ratio {asy['ratio']:.2f} (goal >= 1.5)"
        )
        asy["of_ceiling"] = _paired(async_figures["ours"], async_figures["ceiling"])
        print(
            f"  ceiling: the SDK's method through the library's transport alone {asy['transport_only_calls_s']:8.0f} /s"
            f"    ratio {asy['transport_only_ratio']:.2f}; ours at {asy['of_ceiling']:.2f} of it (goal >= 0.8)"
        )

        cold_raw, cold_ours = [], []
        for _ in range(args.cold):
            cold_raw.append(_fresh(COLD_RAW, base_url, 1)[0])
            cold_ours.append(_fresh(COLD_OURS, base_url, 1)[0])
        cold = {"raw_ms": statistics.median(cold_raw) * 1e3, "ours_ms": statistics.median(cold_ours) * 1e3}
        cold["ratio"] = cold["ours_ms"] / cold["raw_ms"]
        results["cold_start"] = cold
        print(
            f"cold start (median of {args.cold}) raw SDK {cold['raw_ms']:6.0f} ms    "
            f"aims-snaptrade {cold['ours_ms']:6.0f} ms    ratio {cold['ratio']:.2f} (goal <= 0.9)"
        )

        rss_raw, rss_ours = [], []
        for _ in range(args.cold):
            rss_raw.append(_fresh(COLD_RAW, base_url, args.rss_calls)[1])
            rss_ours.append(_fresh(COLD_OURS, base_url, args.rss_calls)[1])
        rss = {"raw_mib": statistics.median(rss_raw) / 1024, "ours_mib": statistics.median(rss_ours) / 1024}
        rss["ratio"] = rss["ours_mib"] / rss["raw_mib"]
        results[f"peak_rss_after_{args.rss_calls}_calls"] = rss
        print(
            f"peak RSS after {args.rss_calls} calls (median of {args.cold}) raw SDK {rss['raw_mib']:6.1f} MiB    "
            f"aims-snaptrade {rss['ours_mib']:6.1f} MiB    ratio {rss['ratio']:.2f} (goal <= 1.15)"
        )
        print(
            f"({args.rounds} rounds; {args.calls} sync calls, {args.async_calls} async calls per round; "
            f"minimal server in its own process on loopback; {results['machine']})"
        )
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
