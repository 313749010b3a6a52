"""Helpers of the portfolio-sync tests: seeded emulator users, client settings, journal figures."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator

POSTGRES_URL = os.environ.get("AIMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AIMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The suite runs a bounded slice; `nox -s sync_load` runs the 1,000 users.
LOAD_USERS = int(os.environ.get("AIMS_SYNC_LOAD_USERS", "50"))
FULL_LOAD = LOAD_USERS >= 1000
# The emulator's shrunk customer window (limit, seconds). The limiter reuses a slot only once it has
# been free for 2% of the window; on a busy CI machine request arrival jitters by tens of
# milliseconds, so windows shorter than ~5 s (margins under 0.1 s) can see a stray 429.
# The client's share of that window. The suite leaves 10% headroom so that a CI machine running
# several suites at once (arrival jitter beyond the margin) cannot fail it with a stray 429;
# the nox load session gives the client the whole window and asserts budget use >= 0.95.
HEADROOM = float(os.environ.get("AIMS_SYNC_LOAD_HEADROOM", "1.0" if FULL_LOAD else "0.9"))
LOAD_WINDOW = (int(os.environ.get("AIMS_SYNC_LOAD_LIMIT", "150")), float(os.environ.get("AIMS_SYNC_LOAD_WINDOW", "5")))


def prefix_for(tmp_path: Path) -> str:
    """A table prefix derived from a test's tmp_path: fresh per test, stable across reopening."""
    return "s" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16] + "_"


def seed(
    emu: SnapTradeEmulator, count: int, *, prefix: str = "user", scenario: str = "cash_only"
) -> list[ConnectedUser]:
    """``count`` users, each with one completed connection."""
    return emu.seed_users(count, prefix=prefix, scenario=scenario)


def secrets_of(users: Sequence[ConnectedUser]) -> MemorySecretStore:
    store = MemorySecretStore()
    for user in users:
        store.put(user.user_id, user.user_secret)
    return store


def client_kwargs(emu: SnapTradeEmulator, **overrides: Any) -> dict[str, Any]:
    """Client settings for ``emu``: its customer window as the budget, consent off (sandbox)."""
    limit = emu.config.customer_rate_limit
    budget = (
        {"customer_limit": int(limit.limit * HEADROOM), "customer_limit_window": limit.window_seconds} if limit else {}
    )
    return {
        "client_id": emu.client_id,
        "consumer_key": emu.consumer_key,
        "environment": "sandbox",
        "base_url": emu.base_url,
        "consent_required": False,
        "rate_limit_max_wait": 120,
        # Redis applies the limiter's safety margin exactly (memory:// forgets a slot the moment it
        # leaves the window); the emulator's unique client id keeps these keys apart.
        "rate_limit_storage_url": REDIS_URL,
        **budget,
        **overrides,
    }


def budget_share(times: Sequence[float], limit: int, window: float) -> float:
    """The share of a rolling budget of ``limit`` per ``window`` seconds that requests arriving at ``times`` used.

    Under that budget the ``(i + N)``-th request arrives at least ``W`` after the ``i``-th, so R
    requests span at least ``floor((R - 1) / N) x W`` seconds from the first to the last, and bursts
    of N every W reach that floor. The share is the floor over the measured span: 1.0 when the
    budget was the only limit, ``W / (W + margin)`` for a limiter that reuses a slot only once it
    has been free for its safety margin. (The fluid ``(R - N) / N x W`` falls short of the floor
    by up to one window when R is not a whole number of windows: for 4,840 requests at 250 per
    5 s it scores a client limited by nothing but the budget 0.966.)
    """
    ordered = sorted(times)
    if len(ordered) <= limit:
        return 0.0
    floor = (len(ordered) - 1) // limit * window
    return floor / (ordered[-1] - ordered[0])


def budget_use(emu: SnapTradeEmulator, since: float = 0.0) -> tuple[int, float]:
    """``(requests served, share of the customer window used)`` from the journal (see :func:`budget_share`)."""
    limit = emu.config.customer_rate_limit
    assert limit is not None
    times = [e.time for e in emu.journal.entries() if e.time >= since and e.status is not None]
    return len(times), budget_share(times, limit.limit, limit.window_seconds)
