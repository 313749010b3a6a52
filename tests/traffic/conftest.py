"""Fixtures for the traffic-control tests: a simulated clock, real storages, a disposable Redis.

Redis is a real server (127.0.0.1:6379 by default, override with AIMS_TEST_REDIS_URL); these tests
fail, never skip, when it is not answering: `.ci/run` starts it. Every test uses its own client id,
so tests never see each other's keys and never need to flush a Redis others may share.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from traffic_helpers import LIMITS_CLOCK_MODULES, REDIS_URL, FakeClock, RedisProcess, policy_for

from aims_snaptrade.ratelimit.limiter import Budget, RateLimitPolicy
from aims_snaptrade.settings import Settings


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A simulated clock installed as limits' ``time``; pass ``clock.time``/``clock.sleep`` to limiters."""
    fake = FakeClock()
    for module in LIMITS_CLOCK_MODULES:
        monkeypatch.setattr(module, "time", fake)
    return fake


@pytest.fixture
def client_id() -> str:
    """A client id of this test's own, so its Redis keys are private."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared test Redis; the session fails if it is not answering."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - CI starts Redis
        pytest.fail(f"Redis at {REDIS_URL} is not answering ({exc}); start it (see .ci/run).")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """Each test using it runs once on limits' memory storage and once on the real Redis."""
    return "memory://" if request.param == "memory" else redis_url


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    """A private redis-server, killed at teardown if the test did not kill it."""
    server = RedisProcess()
    yield server
    server.kill()


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Build validated settings with test credentials and the given overrides."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "client_id": "AIMS-TEST",
            "consumer_key": "traffic-test-consumer-key-0000",
            "environment": "sandbox",
        }
        values.update(overrides)
        return Settings.build(values)

    return build


@pytest.fixture
def make_policy(client_id: str) -> Callable[..., RateLimitPolicy]:
    """``make_policy(Budget(...), account_budget=..., ...)`` for this test's client id."""

    def build(*budgets: Budget, **kwargs: Any) -> RateLimitPolicy:
        return policy_for(client_id, *budgets, **kwargs)

    return build
