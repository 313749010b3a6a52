"""Acceptance slice of issue 10: against the emulator enforcing N=60 per 2 s, no 429 at all.

The fleet benchmark's own phases (``benchmarks/ratelimit_fleet.py``), bounded to 3 windows:
50 asyncio tasks on one ``AsyncSafeSnapTradeClient`` and 4 processes, both on Redis, with retries
off so every 429 shows. The machine is shared, so only the 429s are asserted; utilisation is
printed (``nox -s fleet`` runs 10 windows and checks it is at least 95%).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aims_snaptrade.testing import ClientCredentials, RateLimit, SnapTradeEmulator

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
LIMIT, WINDOW, WINDOWS = 60, 2, 3


@pytest.fixture(scope="module")
def fleet() -> Any:
    """The benchmark module (on sys.path, so spawned workers can import it too)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import ratelimit_fleet

        yield ratelimit_fleet
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture
def emulator() -> Iterator[SnapTradeEmulator]:
    credentials = ClientCredentials(f"FLEET-{uuid.uuid4().hex[:10]}", "fleet-consumer-key-" + uuid.uuid4().hex)
    emu = SnapTradeEmulator(
        clients=(credentials,),
        customer_rate_limit=RateLimit(LIMIT, float(WINDOW)),
        account_rate_limit=None,
        journal_size=100_000,
    )
    with emu:
        yield emu


def run_phase(fleet: Any, emulator: SnapTradeEmulator, redis_url: str, *, processes: int, tasks: int) -> Any:
    args = argparse.Namespace(limit=LIMIT, window=WINDOW, windows=WINDOWS, threads=2, timeout=120.0)
    user = emulator.connect("fleet-user")
    row = fleet.phase(
        "slice", emulator, user, storage_url=redis_url, processes=processes, args=args, tasks=tasks, drain=False
    )
    print(
        f"{processes} process(es), {tasks or 2 * processes} concurrent callers, Redis: {row['requests']} requests, "
        f"{row['throttled']} x 429, utilisation {row['useful']:.3f} of N/W over {WINDOWS} windows"
    )
    return row


def test_fifty_async_tasks_on_redis_meet_no_429(fleet: Any, emulator: SnapTradeEmulator, redis_url: str) -> None:
    row = run_phase(fleet, emulator, redis_url, processes=1, tasks=50)
    assert row["requests"] == LIMIT * WINDOWS
    assert (row["throttled"], row["client_failures"]) == (0, 0)


def test_four_processes_sharing_redis_meet_no_429(fleet: Any, emulator: SnapTradeEmulator, redis_url: str) -> None:
    row = run_phase(fleet, emulator, redis_url, processes=4, tasks=0)
    assert row["requests"] == LIMIT * WINDOWS
    assert (row["throttled"], row["client_failures"]) == (0, 0)
