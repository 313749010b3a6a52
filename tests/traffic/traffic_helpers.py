"""Helpers of the traffic-control tests: a simulated clock and a disposable redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Any

import limits.aio.storage.memory
import limits.aio.storage.redis.redispy
import limits.aio.strategies
import limits.storage.memory
import limits.storage.redis
import limits.strategies
import pytest
import redis

from aims_snaptrade.ratelimit.limiter import Budget, RateLimiter, RateLimitPolicy

REDIS_URL = os.environ.get("AIMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Every module of limits that reads the wall clock as `time.time()`.
LIMITS_CLOCK_MODULES = (
    limits.storage.memory,
    limits.storage.redis,
    limits.strategies,
    limits.aio.storage.memory,
    limits.aio.storage.redis.redispy,
    limits.aio.strategies,
)


class FakeClock:
    """A wall clock that only moves when told to (or when something "sleeps" on it).

    It stands in for the ``time`` module inside limits (which stamps entries with
    ``time.time()``), so hour and day windows can be crossed in microseconds.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A redis-server of the test's own on a loopback port, to be killed mid-run."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:  # pragma: no cover - CI has redis-server
            pytest.fail("redis-server is not on PATH")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail("the test's redis-server did not start")
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def policy_for(client_id: str, *budgets: Budget, **kwargs: Any) -> RateLimitPolicy:
    """A policy with the given client-wide budgets (and keyword fields)."""
    return RateLimitPolicy(client_id=client_id, budgets=budgets, **kwargs)


def race_in_process(policy: RateLimitPolicy, url: str, start: Any, results: Any) -> None:
    """Worker of the multi-process tests: ten fail-fast acquires once ``start`` is set."""
    from aims_snaptrade.errors import SnapTradeBudgetExhaustedError
    from aims_snaptrade.operations import get_operation

    lim = RateLimiter(policy, url)
    start.wait(30)
    admitted = 0
    for _ in range(10):
        try:
            lim.acquire(get_operation("get_user_account_balance"), user_id="user-1", account_id="acc-1", mode="fail")
            admitted += 1
        except SnapTradeBudgetExhaustedError:
            pass
    lim.close()
    results.put(admitted)
