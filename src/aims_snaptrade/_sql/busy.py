"""Retrying SQLite work that another connection holds busy, shared by every SQLite store.

SQLite's own busy handler backs off to 100 ms sleeps and starves writers under steady
contention; short jittered retries keep a write at about a millisecond.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["is_busy", "retry_busy"]

T = TypeVar("T")


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the database is locked or busy (worth retrying)."""
    return "locked" in str(exc) or "busy" in str(exc)


def retry_busy(attempt: Callable[[], T], busy_timeout: float) -> T:
    """``attempt()``, retried with jittered exponential backoff while busy, for ``busy_timeout`` seconds."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.0005
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        # Jitter keeps competing processes from retrying in lockstep.
        time.sleep(random.uniform(0, delay))
        delay = min(delay * 2, 0.01)
