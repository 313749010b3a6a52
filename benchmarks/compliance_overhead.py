"""Per-call cost of consent and audit: the same call with and without them, SQLite and PostgreSQL.

The emulator runs in its own process. The sync client calls ``list_all_user_accounts`` (a read:
one consent lookup, one non-durable audit append) and the consent/audit stores are also timed on
their own, including a durable append (what a write to SnapTrade or a consent change costs).
Printed: microseconds per call and the difference against the bare call. Bounded, loopback only.

    python benchmarks/compliance_overhead.py [--calls 1000] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client_overhead import SERVER

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.compliance import (
    AuditEvent,
    AuditKey,
    PostgresAuditTrail,
    PostgresConsentStore,
    SQLiteAuditTrail,
    SQLiteConsentStore,
)
from aims_snaptrade.secrets import MemorySecretStore

KEY = AuditKey("benchmark-audit-key-0123456789abcdef")


def per_call_us(calls: int, fn: Callable[[], Any]) -> float:
    for _ in range(min(50, calls)):
        fn()  # warm up: connections, caches
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    schema = f"aims_bench_{uuid.uuid4().hex[:8]}"
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        user = info["user_id"]
        with tempfile.TemporaryDirectory() as tmp:
            backends: dict[str, Callable[[], tuple[Any, Any]]] = {
                "sqlite": lambda: (
                    SQLiteConsentStore(Path(tmp) / "c.db"),
                    SQLiteAuditTrail(Path(tmp) / "c.db", KEY),
                ),
                "postgresql": lambda: (
                    PostgresConsentStore(args.postgres, schema=schema),
                    PostgresAuditTrail(args.postgres, KEY, schema=schema),
                ),
            }
            secrets = MemorySecretStore()
            secrets.put(user, info["user_secret"])
            base = {
                "client_id": info["client_id"],
                "consumer_key": info["consumer_key"],
                "environment": "sandbox",
                "base_url": info["base_url"],
                "secret_store": secrets,
                "retry": "none",
                # The benchmark measures the road, not SnapTrade's 250/min budget.
                "customer_limit": 1_000_000,
                "rate_limit_strategy": "sliding-window",
            }

            stores = {name: make() for name, make in backends.items()}
            configs: dict[str, dict[str, Any]] = {"bare call (no consent, no audit)": {}}
            for name, (consent, trail) in stores.items():
                consent.grant(user, "read", "bench", "bench")
                configs[f"{name}: + consent lookup"] = {"consent": consent}
                configs[f"{name}: + audit append"] = {"audit": trail}
                configs[f"{name}: + consent + audit"] = {"consent": consent, "audit": trail}
            clients = {label: SafeSnapTradeClient(**base, **extra) for label, extra in configs.items()}
            # Interleaved rounds, best round kept: the machine's load drifts during a run.
            rounds, best = 5, dict.fromkeys(clients, float("inf"))
            for _ in range(rounds):
                for label, client in clients.items():
                    cost = per_call_us(
                        args.calls // rounds, lambda c=client: c.call("list_all_user_accounts", user_id=user)
                    )
                    best[label] = min(best[label], cost)
            for client in clients.values():
                client.close()
            bare = best["bare call (no consent, no audit)"]
            print(f"{args.calls} calls of list_all_user_accounts per configuration (sync client, emulator on loopback)")
            print(f"{'configuration':42} {'us/call':>9} {'+us':>8} {'ratio':>6}")
            for label, cost in best.items():
                print(f"{label:42} {cost:9.0f} {cost - bare:8.0f} {cost / bare:6.2f}")
            for name, (consent, trail) in stores.items():
                n = args.calls
                alone = [
                    ("consent decide", per_call_us(n, lambda c=consent: c.decide(user, "read"))),
                    ("audit append (read, non-durable)", per_call_us(n, lambda t=trail: t.append(_event(False)))),
                    (
                        "audit append (durable: writes, consent)",
                        per_call_us(n // 4, lambda t=trail: t.append(_event(True))),
                    ),
                ]
                for label, cost in alone:
                    print(f"{name + ': ' + label:42} {cost:9.0f}")
                verify = time.perf_counter()
                report = trail.verify()
                took = time.perf_counter() - verify
                print(f"{name + ': verify':42} {report.checked} records in {took:.2f} s, ok={report.ok}")
                consent.close()
                trail.close()
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(10)
        try:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except Exception as exc:  # the benchmark's result stands; say what was left behind
            print(f"could not drop schema {schema}: {type(exc).__name__}", file=sys.stderr)
    return 0


def _event(durable: bool) -> AuditEvent:
    return AuditEvent("call", "list_all_user_accounts", user_id="bench-user", status=200, attempts=1, durable=durable)


if __name__ == "__main__":
    sys.exit(main())
