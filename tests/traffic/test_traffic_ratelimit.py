"""The rate limiter on limits' real storages (memory and Redis), with a simulated clock where time matters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

import pytest
from traffic_helpers import FakeClock, RedisProcess, free_port

from aims_snaptrade.errors import (
    SnapTradeBudgetExhaustedError,
    SnapTradeConfigurationError,
    SnapTradeRateLimitError,
    SnapTradeRateLimiterUnavailableError,
)
from aims_snaptrade.operations import Operation, get_operation
from aims_snaptrade.ratelimit.limiter import (
    AsyncRateLimiter,
    Budget,
    RateLimiter,
    RateLimitPolicy,
    parse_retry_after,
)
from aims_snaptrade.settings import Settings

BALANCE = get_operation("get_user_account_balance")  # account-scoped read
ACCOUNTS = get_operation("list_all_user_accounts")  # user-scoped, not account-scoped
REFRESH = get_operation("refresh_brokerage_authorization")
CHECK = get_operation("check")  # unsigned

MakePolicy = Callable[..., RateLimitPolicy]


def limiter(policy: RateLimitPolicy, url: str, clock: FakeClock) -> RateLimiter:
    return RateLimiter(policy, url, clock=clock.time, sleep=clock.sleep)


def take(
    lim: RateLimiter,
    op: Operation = BALANCE,
    *,
    account: str | None = "acc-1",
    user: str | None = "user-1",
    max_wait: float | None = None,
    mode: Literal["wait", "fail"] | None = None,
) -> None:
    lim.acquire(op, user_id=user, account_id=account, mode=mode, max_wait=max_wait)


class Refusal:
    """A refusal's fields, with ``retry_after`` known to be set."""

    def __init__(self, error: SnapTradeBudgetExhaustedError) -> None:
        assert error.retry_after is not None
        self.error = error
        self.retry_after: float = error.retry_after
        self.limit_scope = error.limit_scope

    def __str__(self) -> str:
        return str(self.error)


def refused(
    lim: RateLimiter, op: Operation = BALANCE, *, account: str | None = "acc-1", user: str | None = "user-1"
) -> Refusal:
    with pytest.raises(SnapTradeBudgetExhaustedError) as info:
        take(lim, op, account=account, user=user, mode="fail")
    return Refusal(info.value)


# --- settings -> policy --------------------------------------------------------------------------


def test_plan_presets_and_snaptrade_limits_from_settings(make_settings: Callable[..., Settings]) -> None:
    policy = RateLimitPolicy.from_settings(
        make_settings(rate_limit_plan="starter", account_limit=10, user_limit_per_minute=30)
    )
    budgets = {(b.name, b.limit, b.window) for b in policy.budgets}
    assert budgets == {
        ("plan-minute", 60, 60),
        ("plan-hour", 1000, 3600),
        ("plan-day", 10000, 86400),
        ("customer", 250, 60),
    }
    assert policy.account_budget == Budget("account", "account", 10, 60)
    assert policy.user_budget == Budget("user", "user", 30, 60)
    growth = RateLimitPolicy.from_settings(make_settings(rate_limit_plan="growth"))
    assert {(b.name, b.limit) for b in growth.budgets if b.scope == "plan"} == {
        ("plan-minute", 120),
        ("plan-hour", 5000),
        ("plan-day", 50000),
    }
    custom = RateLimitPolicy.from_settings(make_settings(rate_limit_plan="custom", rate_limit_per_hour=7))
    assert [(b.name, b.limit) for b in custom.budgets if b.scope == "plan"] == [("plan-hour", 7)]
    none = RateLimitPolicy.from_settings(make_settings())
    assert [b.name for b in none.budgets] == ["customer"]
    assert none.account_budget is None
    assert none.user_budget is None


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"rate_limit_plan": "enterprise"}, "needs its own values"),
        ({"rate_limit_plan": "custom"}, "needs its own values"),
        ({"rate_limit_plan": "starter", "rate_limit_per_minute": 5}, "is a preset"),
        ({"rate_limit_per_day": 5}, "PLAN is 'none'"),
        ({"customer_limit_window": 1.5}, "whole number of seconds"),
        ({"account_limit": 10, "account_limit_window": 0.5}, "whole number of seconds"),
    ],
)
def test_bad_plan_settings_fail_at_construction(
    make_settings: Callable[..., Settings], overrides: dict[str, object], needle: str
) -> None:
    with pytest.raises(SnapTradeConfigurationError, match=needle):
        RateLimitPolicy.from_settings(make_settings(**overrides))


@pytest.mark.parametrize(
    "overrides",
    [{"rate_limit_plan": "platinum"}, {"customer_limit": -1}, {"account_limit": 0}, {"rate_limit_per_minute": -5}],
)
def test_negative_limits_and_unknown_plans_are_refused(
    make_settings: Callable[..., Settings], overrides: dict[str, object]
) -> None:
    with pytest.raises(SnapTradeConfigurationError):
        RateLimitPolicy.from_settings(make_settings(**overrides))


def test_policy_values_are_validated_without_settings() -> None:
    with pytest.raises(SnapTradeConfigurationError, match="limit must be"):
        Budget("customer", "customer", -3, 60)
    with pytest.raises(SnapTradeConfigurationError, match="window must be"):
        Budget("customer", "customer", 3, 0)
    with pytest.raises(SnapTradeConfigurationError, match="max_wait"):
        RateLimitPolicy(client_id="c", budgets=(), max_wait=-1)
    with pytest.raises(SnapTradeConfigurationError, match="strategy"):
        RateLimitPolicy(client_id="c", budgets=(), strategy="fixed-window")  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["mongodb://x", "valkey://127.0.0.1:6379", "not a url"])
def test_unsupported_storage_uri_fails_at_construction(make_policy: MakePolicy, url: str) -> None:
    with pytest.raises(SnapTradeConfigurationError):
        RateLimiter(make_policy(Budget("customer", "customer", 1, 1)), url)


def test_unreachable_redis_fails_at_construction_without_leaking_password(make_policy: MakePolicy) -> None:
    url = f"redis://:s3cret-password@127.0.0.1:{free_port()}/0"
    policy = make_policy(Budget("customer", "customer", 1, 1))
    for build in (RateLimiter, AsyncRateLimiter):
        with pytest.raises(SnapTradeConfigurationError, match="does not answer") as info:
            build(policy, url)
        assert "s3cret-password" not in str(info.value)
    with pytest.raises(SnapTradeConfigurationError, match="malformed") as info:
        RateLimiter(policy, "redis://:s3cret-password@127.0.0.1:port/0")
    assert "s3cret-password" not in str(info.value)


# --- windows ---------------------------------------------------------------------------------------


def test_hour_and_day_windows_really_hold(
    make_settings: Callable[..., Settings], client_id: str, storage_url: str, clock: FakeClock
) -> None:
    # The guide's sketch keys every window by the current minute; here an hour is an hour.
    settings = make_settings(client_id=client_id, rate_limit_plan="custom", rate_limit_per_hour=3, rate_limit_per_day=5)
    lim = limiter(RateLimitPolicy.from_settings(settings), storage_url, clock)
    for _ in range(3):
        take(lim)
        clock.advance(60)  # one per minute: a per-minute window would never fill
    error = refused(lim)
    assert error.limit_scope == "plan"
    assert 3600 - 180 - 1 <= error.retry_after <= 3600 - 180 + 1
    clock.advance(3600 - 180 - 2)  # 58 minutes later the first request is still inside the hour
    assert refused(lim).limit_scope == "plan"
    clock.advance(3)  # now it has left the hour: one slot frees
    take(lim)
    assert refused(lim).limit_scope == "plan"
    clock.advance(3600)
    take(lim)  # fifth of the day
    error = refused(lim)  # the hour has room, the day does not
    assert "plan-day" in str(error)
    assert error.retry_after > 20 * 3600
    clock.advance(86400)
    take(lim)
    lim.close()


def test_per_account_buckets_are_independent(make_policy: MakePolicy, storage_url: str, clock: FakeClock) -> None:
    policy = make_policy(Budget("customer", "customer", 100, 60), account_budget=Budget("account", "account", 2, 60))
    lim = limiter(policy, storage_url, clock)
    take(lim, account="acc-A")
    take(lim, account="acc-A")
    error = refused(lim, account="acc-A")
    assert error.limit_scope == "account"
    assert 59 <= error.retry_after <= 61
    take(lim, account="acc-B")
    take(lim, account="acc-B")
    take(lim, ACCOUNTS, account="acc-A")  # not account-scoped: the account's bucket does not apply
    take(lim, get_operation("place_order"), account="acc-A")  # place_order is not account-scoped
    usage = {(u.name, u.subject): u.used for u in lim.usage()}
    assert usage == {("customer", None): 6, ("account", "acc-A"): 2, ("account", "acc-B"): 2}


def test_refusing_budget_does_not_consume_the_others(
    make_policy: MakePolicy, storage_url: str, clock: FakeClock
) -> None:
    policy = make_policy(
        Budget("customer", "customer", 10, 60),
        Budget("plan-minute", "plan", 10, 60),
        account_budget=Budget("account", "account", 1, 60),
        user_budget=Budget("user", "user", 10, 60),
    )
    lim = limiter(policy, storage_url, clock)
    take(lim)
    for _ in range(5):
        refused(lim)
    assert {u.name: u.used for u in lim.usage() if u.subject is None or u.name == "user"} == {
        "customer": 1,
        "plan-minute": 1,
        "user": 1,
    }


def test_keys_are_shared_by_replicas_on_redis_and_scoped_by_client_id(
    make_policy: MakePolicy, redis_url: str, clock: FakeClock
) -> None:
    policy = make_policy(Budget("customer", "customer", 4, 60))
    replica_a = limiter(policy, redis_url, clock)
    replica_b = limiter(policy, redis_url, clock)
    for replica in (replica_a, replica_b, replica_a, replica_b):
        take(replica)
    assert refused(replica_a).limit_scope == "customer"
    assert refused(replica_b).limit_scope == "customer"
    other_client = limiter(
        RateLimitPolicy(client_id=policy.client_id + "-other", budgets=policy.budgets), redis_url, clock
    )
    take(other_client)
    for lim in (replica_a, replica_b, other_client):
        lim.close()


def test_unsigned_operations_do_not_draw_on_the_customer_budget(make_policy: MakePolicy, clock: FakeClock) -> None:
    lim = limiter(
        make_policy(Budget("customer", "customer", 1, 60), Budget("plan-minute", "plan", 3, 60)), "memory://", clock
    )
    take(lim, CHECK, account=None, user=None)
    take(lim, CHECK, account=None, user=None)
    take(lim)
    assert refused(lim, CHECK, account=None, user=None).limit_scope == "plan"


# --- wait and fail ---------------------------------------------------------------------------------


def test_fail_mode_raises_with_retry_after_and_sends_nothing(
    make_policy: MakePolicy, storage_url: str, clock: FakeClock
) -> None:
    lim = limiter(make_policy(Budget("customer", "customer", 2, 10)), storage_url, clock)
    take(lim)
    clock.advance(4)
    take(lim)
    refusal = refused(lim)
    error = refusal.error
    assert isinstance(error, SnapTradeRateLimitError)
    assert error.status is None
    assert error.operation == BALANCE.name
    assert 6.0 <= refusal.retry_after <= 6.3  # the first slot frees 10 s after it was taken
    assert clock.sleeps == []


def test_wait_mode_waits_for_the_slot_but_never_beyond_max_wait(
    make_policy: MakePolicy, storage_url: str, clock: FakeClock
) -> None:
    lim = limiter(make_policy(Budget("customer", "customer", 1, 10), mode="wait", max_wait=30), storage_url, clock)
    take(lim)
    with pytest.raises(SnapTradeBudgetExhaustedError) as info:
        take(lim, max_wait=3)
    assert clock.sleeps == []  # the slot frees in 10 s: fail now rather than sleep 3 s and fail
    assert info.value.retry_after == pytest.approx(10, abs=0.3)
    start = clock.now
    take(lim)  # policy default: waits up to 30 s
    assert 10 <= clock.now - start <= 10.3
    assert sum(clock.sleeps) <= 30


def test_wait_mode_really_sleeps(make_policy: MakePolicy, storage_url: str) -> None:
    lim = RateLimiter(make_policy(Budget("customer", "customer", 2, 1)), storage_url)
    start = time.monotonic()
    for _ in range(4):
        take(lim, max_wait=5)
    elapsed = time.monotonic() - start
    assert 0.95 <= elapsed <= 1.5
    lim.close()


def test_usage_reports_fractions_and_alerts_at_80_percent(
    make_policy: MakePolicy, storage_url: str, clock: FakeClock
) -> None:
    lim = limiter(
        make_policy(Budget("customer", "customer", 5, 60), Budget("plan-minute", "plan", 10, 60)), storage_url, clock
    )
    for _ in range(3):
        take(lim)
    usage = {u.name: u for u in lim.usage()}
    assert (usage["customer"].used, usage["customer"].remaining, usage["customer"].fraction) == (3, 2, 0.6)
    assert not usage["customer"].alert
    take(lim)
    usage = {u.name: u for u in lim.usage()}
    assert usage["customer"].fraction == 0.8
    assert usage["customer"].alert
    assert usage["plan-minute"].fraction == 0.4
    assert not usage["plan-minute"].alert


def test_sliding_window_strategy(make_policy: MakePolicy, storage_url: str) -> None:
    # Real time: on Redis the sliding-window counter ages its counters with server-side TTLs.
    lim = RateLimiter(make_policy(Budget("customer", "customer", 3, 1), strategy="sliding-window"), storage_url)
    for _ in range(3):
        take(lim)
    assert 0 < refused(lim).retry_after <= 2
    start = time.monotonic()
    take(lim, max_wait=3)
    assert time.monotonic() - start <= 2.5
    lim.close()


# --- server feedback -------------------------------------------------------------------------------


def test_429_with_retry_after_pauses_the_customer_scope(
    make_policy: MakePolicy, storage_url: str, clock: FakeClock
) -> None:
    lim = limiter(make_policy(Budget("customer", "customer", 100, 60)), storage_url, clock)
    lim.observe(ACCOUNTS, account_id=None, status=429, headers={"retry-after": "7", "X-RateLimit-Remaining": "0"})
    error = refused(lim)
    assert error.limit_scope == "customer"
    assert error.retry_after == pytest.approx(7)
    assert any(u.paused_until for u in lim.usage())
    start = clock.now
    take(lim, max_wait=10)  # waits the pause out
    assert clock.now - start == pytest.approx(7)


def test_account_429_pauses_only_that_account(make_policy: MakePolicy, clock: FakeClock) -> None:
    lim = limiter(
        make_policy(Budget("customer", "customer", 100, 60), account_budget=Budget("account", "account", 10, 60)),
        "memory://",
        clock,
    )
    lim.observe(
        BALANCE,
        account_id="acc-1",
        status=429,
        headers={"X-RateLimit-Remaining": "50", "X-RateLimit-Account-Remaining": "0", "X-RateLimit-Account-Reset": "4"},
    )
    error = refused(lim, account="acc-1")
    assert (error.limit_scope, error.retry_after) == ("account", 4)
    take(lim, account="acc-2")
    take(lim, ACCOUNTS)


def test_refresh_cooldown_429_pauses_nothing(make_policy: MakePolicy, clock: FakeClock) -> None:
    lim = limiter(make_policy(Budget("customer", "customer", 100, 60)), "memory://", clock)
    lim.observe(REFRESH, account_id=None, status=429, headers={"Retry-After": "300"})
    take(lim)


def test_lower_remaining_counts_someone_elses_requests_for_every_replica(
    make_policy: MakePolicy, redis_url: str, clock: FakeClock
) -> None:
    policy = make_policy(Budget("customer", "customer", 10, 60))
    replica_a, replica_b = limiter(policy, redis_url, clock), limiter(policy, redis_url, clock)
    sent_at = replica_a.acquire(BALANCE, user_id="user-1", account_id="acc-1")
    # SnapTrade counted 4 (another service shares the client id); we only know of 1. Observing
    # costs no round trip: the report rides on replica A's next composed check.
    replica_a.observe(ACCOUNTS, account_id=None, status=200, headers={"X-RateLimit-Remaining": "6"}, sent_at=sent_at)
    assert [u.used for u in replica_b.usage()] == [1]
    take(replica_a)
    assert [u.used for u in replica_b.usage()] == [5]
    # Agreeing or higher numbers change nothing.
    replica_b.observe(ACCOUNTS, account_id=None, status=200, headers={"X-RateLimit-Remaining": "5"})
    replica_b.observe(ACCOUNTS, account_id=None, status=200, headers={})
    assert [u.used for u in replica_a.usage()] == [5]
    replica_b.observe(ACCOUNTS, account_id=None, status=200, headers={"X-RateLimit-Remaining": "9"})
    assert [u.used for u in replica_b.usage()] == [5]
    # Remaining 0 with a Reset: pause until the reset instead of filling the window.
    replica_b.observe(
        ACCOUNTS, account_id=None, status=200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}
    )
    error = refused(replica_b)
    assert (error.limit_scope, error.retry_after) == ("customer", 3)
    assert [u.used for u in replica_a.usage()] == [5]
    for lim in (replica_a, replica_b):
        lim.close()


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window"])
def test_the_first_take_after_an_answer_records_what_snaptrade_counted_beyond_the_local_count(
    make_policy: MakePolicy, storage_url: str, clock: FakeClock, strategy: str
) -> None:
    # The take that follows an answer carries its report; on memory it is a call's first attempt
    # (the fast path when the report changes nothing, the general rules when it does).
    lim = limiter(make_policy(Budget("customer", "customer", 10, 60), strategy=strategy), storage_url, clock)
    sent_at = lim.acquire(BALANCE, user_id="user-1", account_id="acc-1")
    lim.observe(ACCOUNTS, account_id=None, status=200, headers={"X-RateLimit-Remaining": "6"}, sent_at=sent_at)
    take(lim)  # SnapTrade counted 4 where this limiter counted 1: the 3 others are recorded, then 1 taken
    assert [u.used for u in lim.usage()] == [5]
    for remaining in ("5", "9"):  # agreeing, then higher: nothing more is recorded
        lim.observe(ACCOUNTS, account_id=None, status=200, headers={"X-RateLimit-Remaining": remaining})
        take(lim)
    assert [u.used for u in lim.usage()] == [7]
    lim.observe(ACCOUNTS, account_id=None, status=200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"})
    assert (refused(lim).limit_scope, refused(lim).retry_after) == ("customer", 3)
    lim.close()


def test_parse_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7", now=0) == 7
    assert parse_retry_after(" 1.5 ", now=0) == 1.5
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40) == 60
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


# --- storage failures ------------------------------------------------------------------------------


def test_redis_killed_mid_run_raises_a_typed_error_then_recovers_never_unlimited(
    make_policy: MakePolicy, redis_process: RedisProcess
) -> None:
    lim = RateLimiter(make_policy(Budget("customer", "customer", 100, 60)), redis_process.url)
    take(lim)
    redis_process.kill()
    for _ in range(3):
        with pytest.raises(SnapTradeRateLimiterUnavailableError) as info:
            take(lim)
        assert isinstance(info.value, SnapTradeConfigurationError)
        assert "was not sent" in str(info.value)
    with pytest.raises(SnapTradeRateLimiterUnavailableError):
        lim.usage()
    lim.close()


async def test_async_redis_killed_mid_run_raises_a_typed_error(
    make_policy: MakePolicy, redis_process: RedisProcess
) -> None:
    lim = AsyncRateLimiter(make_policy(Budget("customer", "customer", 100, 60)), redis_process.url)
    await lim.acquire(BALANCE, user_id="u", account_id="a")
    redis_process.kill()
    with pytest.raises(SnapTradeRateLimiterUnavailableError):
        await lim.acquire(BALANCE, user_id="u", account_id="a")
    await lim.close()


# --- async -----------------------------------------------------------------------------------------


async def test_async_limiter_makes_the_same_decisions(
    make_policy: MakePolicy, storage_url: str, clock: FakeClock
) -> None:
    policy = make_policy(Budget("customer", "customer", 5, 60), account_budget=Budget("account", "account", 2, 60))
    lim = AsyncRateLimiter(policy, storage_url, clock=clock.time, sleep=clock.asleep)
    for account in ("a", "a", "b"):
        await lim.acquire(BALANCE, user_id="u", account_id=account)
    with pytest.raises(SnapTradeBudgetExhaustedError) as info:
        await lim.acquire(BALANCE, user_id="u", account_id="a", mode="fail")
    assert info.value.limit_scope == "account"
    start = clock.now
    await lim.acquire(BALANCE, user_id="u", account_id="a", max_wait=61)
    assert 60 <= clock.now - start <= 60.5
    await lim.observe(ACCOUNTS, account_id=None, status=429, headers={"Retry-After": "2"})
    with pytest.raises(SnapTradeBudgetExhaustedError):
        await lim.acquire(ACCOUNTS, user_id="u", account_id=None, mode="fail")
    usage = {(u.name, u.subject): u.used for u in await lim.usage()}
    assert usage[("account", "a")] == 1
    await lim.close()


async def test_async_waiting_does_not_block_the_event_loop(make_policy: MakePolicy, storage_url: str) -> None:
    lim = AsyncRateLimiter(make_policy(Budget("customer", "customer", 1, 1)), storage_url)
    await lim.acquire(ACCOUNTS, user_id="u", account_id=None)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.create_task(ticker())
    start = time.monotonic()
    await lim.acquire(ACCOUNTS, user_id="u", account_id=None, max_wait=5)
    elapsed = time.monotonic() - start
    task.cancel()
    assert 0.8 <= elapsed <= 1.5
    assert ticks >= 10  # the loop kept running while the acquire waited
    await lim.close()


def test_feedback_compares_use_when_the_local_budget_exceeds_snaptrades(
    make_policy: MakePolicy, storage_url: str, clock: FakeClock
) -> None:
    # A local budget far above SnapTrade's 250 must not read SnapTrade's Remaining as millions of
    # requests made by someone else (that once filled memory with one entry per "missing" hit).
    lim = limiter(make_policy(Budget("customer", "customer", 1_000_000, 60)), storage_url, clock)
    for _ in range(3):
        take(lim)
    lim.observe(
        ACCOUNTS, account_id=None, status=200, headers={"X-RateLimit-Limit": "250", "X-RateLimit-Remaining": "200"}
    )
    used = next(u for u in lim.usage() if u.name == "customer").used
    # SnapTrade saw 50 used, we counted 3: the other 47 are someone else's, counted once.
    assert 3 <= used <= 50
