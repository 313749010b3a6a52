"""Where a call's microseconds go: the road's parts measured one by one, CPU time per call.

The transport is replaced by one that returns a canned answer, so what is measured is the
library's own work on the road (guardrails, secret lookup, budgets, attempt, telemetry, model
parsing); the SDK's own cost per call (request building, signing, urllib3, JSON) is measured
against the minimal server of ``client_speed.py`` beside it. Each figure is the best of three
runs of ``--calls`` calls, in CPU microseconds (``time.process_time``), so a busy machine
disturbs it less than wall time.

    python benchmarks/road_breakdown.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import client_speed as cs


def cpu_us(calls: int, fn: Callable[[], Any]) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    n = args.calls

    import tenacity
    from snaptrade_client import SnapTrade, SnapTradeAuth

    from aims_snaptrade import SafeSnapTradeClient
    from aims_snaptrade._transport import Response
    from aims_snaptrade.models import Account
    from aims_snaptrade.observability.telemetry import CallTelemetry, Endpoint
    from aims_snaptrade.operations import get_operation
    from aims_snaptrade.secrets import Keyring, SQLiteSecretStore

    operation = get_operation("list_all_user_accounts")
    body = json.loads(cs.BODY)
    canned = Response(operation.name, 200, {"X-Request-ID": "bench"}, body, "bench", 0.0)
    options = cs.client_options("http://127.0.0.1:9/api/v1")
    store = options["secret_store"]
    rows: list[tuple[str, float]] = []

    with SafeSnapTradeClient(**options) as client:
        client._transport.send = lambda *_: canned  # type: ignore[method-assign]
        rows.append(
            (
                "road, call() (everything but the SDK)",
                cpu_us(n, lambda: client.call(operation.name, user_id=cs.USER_ID)),
            )
        )
        rows.append(("road, list_accounts() (with model parsing)", cpu_us(n, lambda: client.list_accounts(cs.USER_ID))))
        limiter = client._limiter

        def budget() -> None:
            sent = limiter.acquire(operation, user_id=cs.USER_ID, account_id=None)
            limiter.observe(operation, account_id=None, status=200, headers=canned.headers, sent_at=sent)

        rows.append(("  rate-limit budget: acquire + observe (memory)", cpu_us(n, budget)))
        core = client._core

    def telemetry() -> None:
        t = CallTelemetry(operation, Endpoint.of(options["base_url"]), observers=[], include_ids=False)
        t.acquiring()
        t.sending()
        t.attempt_succeeded(200)
        t.succeeded(200, "bench")

    rows.append(("  telemetry: span and metrics (no OpenTelemetry SDK)", cpu_us(n, telemetry)))
    policy = core.retry

    def retry_objects() -> None:
        run = policy.start(operation, has_idempotency_key=False, deadline=30.0)
        retrying = tenacity.Retrying(**run.kwargs)
        state = tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})
        retrying.begin()
        retrying.iter(state)
        state.set_result(canned)
        retrying.iter(state)

    rows.append(("  tenacity objects, if built per call (now: only after a failure)", cpu_us(n, retry_objects)))
    rows.append(("  secret: cache hit", cpu_us(n, lambda: core.secrets.get(cs.USER_ID))))
    rows.append(("  secret: memory store get (cache off)", cpu_us(n, lambda: store.get(cs.USER_ID))))
    with tempfile.TemporaryDirectory() as folder:
        sqlite = SQLiteSecretStore(Path(folder) / "s.db", Keyring.generate())
        sqlite.put(cs.USER_ID, cs.USER_SECRET)
        rows.append(
            ("  secret: SQLite get + AES-GCM decrypt (cache off)", cpu_us(n // 4, lambda: sqlite.get(cs.USER_ID)))
        )

        async def hops() -> float:
            async def hop() -> None:
                await asyncio.to_thread(sqlite.get, cs.USER_ID)

            await hop()
            start = time.process_time()
            for _ in range(n // 10):
                await hop()
            return (time.process_time() - start) / (n // 10) * 1e6

        rows.append(("  async: SQLite get through asyncio.to_thread (cache off)", asyncio.run(hops())))
        sqlite.close()
    results = body["results"]
    rows.append(("  model parsing: two Account.from_api", cpu_us(n, lambda: [Account.from_api(r) for r in results])))

    server = subprocess.Popen(
        [sys.executable, "-c", cs.SERVER, cs.BODY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base_url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        sdk = SnapTrade(
            host=base_url, auth=SnapTradeAuth.commercial_api_key(consumer_key=cs.CONSUMER_KEY, client_id=cs.CLIENT_ID)
        )
        raw = cpu_us(
            n // 20,
            lambda: sdk.account_information.list_all_user_accounts(user_id=cs.USER_ID, user_secret=cs.USER_SECRET),
        )
        rows.insert(0, ("raw SDK call over loopback (client CPU)", raw))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)

    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value:8.1f} us")
    print(f"(CPU microseconds per call, best of 3 x {n} calls; canned answers, no network, but for the raw SDK row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
