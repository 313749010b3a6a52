"""The emulator's own rate limits, applied the way SnapTrade applies its limits.

SnapTrade uses rolling windows: a request is allowed when fewer than ``limit`` requests were
allowed in the last ``window_seconds``. Refused (429) requests do not count. The numbers a client
sees in the headers are derived from the same log:

* ``Remaining``: requests still allowed now (after counting this one);
* ``Reset``: whole seconds until the oldest counted request leaves the window, i.e. until one
  more request is allowed (0 when nothing is counted);
* ``Retry-After`` on a 429: the same wait, at least 1 second.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from aims_snaptrade.testing.config import RateLimit

__all__ = ["SlidingWindowLimiter", "WindowState"]


@dataclass(frozen=True, slots=True)
class WindowState:
    """A window's state after a request was (or was not) counted.

    Attributes:
        allowed: The request may proceed.
        limit: The window's capacity.
        remaining: Requests still allowed in the window.
        reset_seconds: Whole seconds until one more request is allowed (0 if one is allowed now
            and nothing is counted).
        retry_after: Whole seconds a refused client should wait (at least 1); 0 when allowed.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int


class SlidingWindowLimiter:
    """Rolling-window counters keyed by anything hashable (a client id, a (client, account) pair).

    Thread-safe; every operation is O(expired entries) amortised.
    """

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._log: dict[Hashable, deque[float]] = {}

    def _state(self, log: deque[float], now: float, allowed: bool) -> WindowState:
        window = self.limit.window_seconds
        wait = (log[0] + window - now) if log else 0.0
        reset = max(0, math.ceil(wait)) if log else 0
        return WindowState(
            allowed=allowed,
            limit=self.limit.limit,
            remaining=max(0, self.limit.limit - len(log)),
            reset_seconds=reset,
            retry_after=0 if allowed else max(1, math.ceil(wait)),
        )

    def _purge(self, key: Hashable, now: float) -> deque[float]:
        log = self._log.get(key)
        if log is None:
            log = self._log[key] = deque()
        horizon = now - self.limit.window_seconds
        while log and log[0] <= horizon:
            log.popleft()
        return log

    def hit(self, key: Hashable) -> WindowState:
        """Count a request for ``key`` if the window has room; report the window either way."""
        with self._lock:
            now = self._clock()
            log = self._purge(key, now)
            if len(log) >= self.limit.limit:
                return self._state(log, now, allowed=False)
            log.append(now)
            return self._state(log, now, allowed=True)

    def peek(self, key: Hashable) -> WindowState:
        """Report the window for ``key`` without counting anything."""
        with self._lock:
            now = self._clock()
            log = self._purge(key, now)
            return self._state(log, now, allowed=len(log) < self.limit.limit)

    def reset(self) -> None:
        """Forget every counted request."""
        with self._lock:
            self._log.clear()
