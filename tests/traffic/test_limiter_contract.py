"""The limiter's shells (docs/traffic-control.md "When Redis goes away", docs/compliance.md "Ids in
shared infrastructure are keyed hashes"): storage URLs and what a wrong one says (never its
password), the Redis connection's bounds, per-call options, the buckets each call draws on
whatever calls came before, usage figures, and a user's budget keys on Redis: keyed hashes,
forgotten on erasure."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st
from limits.errors import ConfigurationError as LimitsConfigurationError
from redis.backoff import NoBackoff
from traffic_helpers import REDIS_URL, FakeClock, free_port, policy_for

from aims_snaptrade._ids import keyed_ids
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeRateLimiterUnavailableError, UpstreamCause
from aims_snaptrade.operations import OPERATIONS, Operation, get_operation
from aims_snaptrade.ratelimit import limiter as limiter_module
from aims_snaptrade.ratelimit._policy import Take
from aims_snaptrade.ratelimit._take import MemoryBudgets, script_call
from aims_snaptrade.ratelimit.limiter import AsyncRateLimiter, Budget, RateLimiter, RateLimitPolicy

ACCOUNTS = get_operation("list_all_user_accounts")
BALANCE = get_operation("get_user_account_balance")
REGISTER = get_operation("register_snap_trade_user")

# --- storage URLs ------------------------------------------------------------------------------------

userinfo_text = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12)


@settings(max_examples=60)
@given(
    scheme=st.sampled_from(["redis", "rediss", "memory", "async+redis"]),
    user=st.one_of(st.just(""), userinfo_text),
    password=st.one_of(st.none(), userinfo_text.map(lambda text: f"pw-{text}")),
)
def test_a_storage_url_is_shown_with_its_password_masked(scheme: str, user: str, password: str | None) -> None:
    userinfo = user + (f":{password}" if password is not None else "")
    url = f"{scheme}://{userinfo}@cache.internal:6379/0" if userinfo else f"{scheme}://cache.internal:6379/0"
    shown = limiter_module._safe_url(url)
    if password is None:
        assert shown == url
    else:
        assert shown == f"{scheme}://{user}:***@cache.internal:6379/0"
        assert password not in shown


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", ("memory", "memory://")),
        ("async+memory://", ("memory", "memory://")),
        ("REDIS://cache:6379/0", ("redis", "REDIS://cache:6379/0")),
        ("async+rediss://cache:6380/1", ("rediss", "rediss://cache:6380/1")),
        ("redis+unix:///run/redis.sock", ("redis+unix", "redis+unix:///run/redis.sock")),
        ("redis://h:1/0?x=async+", ("redis", "redis://h:1/0?x=async+")),
        ("redis://h:1/0?next=memcached://m", ("redis", "redis://h:1/0?next=memcached://m")),
    ],
)
def test_supported_storage_urls(url: str, expected: tuple[str, str]) -> None:
    assert limiter_module._split_scheme(url) == expected


@pytest.mark.parametrize(
    ("url", "message", "hint"),
    [
        (
            "cache:6379",
            "SNAPTRADE_RATE_LIMIT_STORAGE_URL 'cache:6379' is not a storage URI.",
            "Use memory:// (one process) or redis://host:port/db (shared by replicas).",
        ),
        (
            7,
            "SNAPTRADE_RATE_LIMIT_STORAGE_URL 7 is not a storage URI.",
            "Use memory:// (one process) or redis://host:port/db (shared by replicas).",
        ),
        (
            "memcached://cache:11211",
            "SNAPTRADE_RATE_LIMIT_STORAGE_URL uses 'memcached', which the rate limiter does not support.",
            "Use memory://, redis://, rediss:// or redis+unix://.",
        ),
        (
            "async+mongodb://db/x",
            "SNAPTRADE_RATE_LIMIT_STORAGE_URL uses 'mongodb', which the rate limiter does not support.",
            "Use memory://, redis://, rediss:// or redis+unix://.",
        ),
    ],
)
def test_an_unsupported_storage_url_says_what_is(url: Any, message: str, hint: str) -> None:
    with pytest.raises(SnapTradeConfigurationError) as refused:
        limiter_module._split_scheme(url)
    assert (refused.value.message, refused.value.hint) == (message, hint)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_redis_connection_is_bounded(asynchronous: bool) -> None:
    """Connect and command timeouts of 2 s and one immediate reconnect: a dead Redis is said quickly."""
    options = limiter_module._redis_options("redis://:pw@127.0.0.1:6390/3", asynchronous=asynchronous)
    pool = options["connection_pool"]
    kwargs = pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (2.0, 2.0)
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("127.0.0.1", 6390, 3, "pw")
    retry = kwargs["retry"]
    assert retry._retries == 1 and isinstance(retry._backoff, NoBackoff)
    assert set(options) == ({"connection_pool", "implementation"} if asynchronous else {"connection_pool"})
    if asynchronous:
        assert options["implementation"] == "redispy"
    socket = limiter_module._redis_options("redis+unix:///run/redis-unix.sock?db=2", asynchronous=asynchronous)
    unix = socket["connection_pool"].connection_kwargs
    assert (unix["path"], unix["db"], unix["socket_timeout"]) == ("/run/redis-unix.sock", 2, 2.0)
    odd = limiter_module._redis_options("redis+unix:///tmp/redis+unix://x.sock", asynchronous=asynchronous)
    assert odd["connection_pool"].connection_kwargs["path"] == "/tmp/redis+unix://x.sock"  # only the scheme is ours


def test_a_malformed_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(SnapTradeConfigurationError) as refused:
        limiter_module._redis_options("redis://:s3cret@127.0.0.1:port/0", asynchronous=False)
    assert refused.value.message == "SNAPTRADE_RATE_LIMIT_STORAGE_URL redis://:***@127.0.0.1:port/0 is malformed."
    assert refused.value.hint == "Use redis://[:password@]host:port/db, rediss://... or redis+unix:///path/to/socket."


def test_what_limits_refuses_is_said_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(target: str, **options: Any) -> Any:
        raise LimitsConfigurationError(f"{target} needs a prerequisite" if "pre" in target else f"bad {target}")

    monkeypatch.setattr(limiter_module, "storage_from_string", refuse)
    with pytest.raises(SnapTradeConfigurationError) as missing:
        limiter_module._open("redis://:s3cret@pre:6379/0", "redis", asynchronous=False)
    assert missing.value.message == (
        "SNAPTRADE_RATE_LIMIT_STORAGE_URL is redis://:***@pre:6379/0 but the redis package is not installed."
    )
    assert missing.value.hint == "pip install 'aims-snaptrade[redis]'."
    with pytest.raises(SnapTradeConfigurationError) as unusable:
        limiter_module._open("memory://:s3cret@x", "memory", asynchronous=True)
    assert unusable.value.message == "SNAPTRADE_RATE_LIMIT_STORAGE_URL memory://:***@x is not usable by limits."


def test_the_storage_is_opened_with_wrapped_errors_and_our_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(target: str, **options: Any) -> str:
        seen.append((target, options))
        return "storage"

    monkeypatch.setattr(limiter_module, "storage_from_string", record)
    assert limiter_module._open("memory://", "memory", asynchronous=False) == ("storage", None)
    storage, pool = limiter_module._open("redis://127.0.0.1:6390/0", "redis", asynchronous=True)
    assert storage == "storage" and pool is seen[1][1]["connection_pool"]
    assert seen[0] == ("memory://", {"wrap_exceptions": True})
    assert seen[1][0] == "async+redis://127.0.0.1:6390/0"
    assert seen[1][1]["wrap_exceptions"] is True and seen[1][1]["implementation"] == "redispy"


def test_an_unreachable_redis_is_said_at_construction(client_id: str) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(SnapTradeConfigurationError) as refused:
        RateLimiter(policy_for(client_id, Budget("customer", "customer", 1, 1)), url)
    assert refused.value.message == f"The rate-limit storage {limiter_module._safe_url(url)} does not answer."
    assert refused.value.hint == (
        "Start Redis or fix SNAPTRADE_RATE_LIMIT_STORAGE_URL; the client never runs without limits."
    )


def test_a_policy_must_be_a_policy() -> None:
    with pytest.raises(SnapTradeConfigurationError) as refused:
        RateLimiter({"customer": 5}, "memory://")  # type: ignore[arg-type]
    assert refused.value.message == "policy must be a RateLimitPolicy, got dict."
    assert refused.value.hint == "Build it with RateLimitPolicy.from_settings(settings)."


# --- per-call options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "max_wait", "message"),
    [
        ("block", None, "rate-limit mode must be 'wait' or 'fail', got 'block'."),
        (None, -0.5, "max_wait must be seconds >= 0, got -0.5."),
        ("wait", float("nan"), "max_wait must be seconds >= 0, got nan."),
        ("fail", "3", "max_wait must be seconds >= 0, got '3'."),
    ],
)
def test_wrong_per_call_options_are_refused(client_id: str, mode: Any, max_wait: Any, message: str) -> None:
    lim = RateLimiter(policy_for(client_id, Budget("customer", "customer", 5, 60)), "memory://")
    with pytest.raises(SnapTradeConfigurationError) as refused:
        lim.acquire(ACCOUNTS, user_id="u", account_id=None, mode=mode, max_wait=max_wait)
    assert refused.value.message == message
    assert lim._options(None, None) == ("wait", 30.0)
    assert lim._options("fail", None) == ("fail", 30.0)
    assert lim._options(None, 0) == ("wait", 0.0)
    assert lim._options(None, 2) == ("wait", 2.0) and type(lim._options(None, 2)[1]) is float


# --- the buckets each call draws on -----------------------------------------------------------------------

OPERATION_LIST = sorted(OPERATIONS.values(), key=lambda op: op.name)
calls = st.lists(
    st.tuples(
        st.sampled_from(OPERATION_LIST),
        st.sampled_from([None, "user-1", "user-2"]),
        st.sampled_from([None, "acc-1", "acc-2"]),
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def hashed_limiters() -> Any:
    """Limiters on Redis with ids hashed (one per budget set; building one pings Redis)."""
    made: dict[tuple[bool, ...], RateLimiter] = {}

    def get(account: bool, user: bool, trade: bool, sliding: bool = False) -> RateLimiter:
        if (account, user, trade, sliding) not in made:
            made[(account, user, trade, sliding)] = RateLimiter(
                _policy(f"keys-{uuid.uuid4().hex[:10]}", account, user, trade, sliding),
                REDIS_URL,
                id_secret="consumer-key-for-hashing",
            )
        return made[(account, user, trade, sliding)]

    yield get
    for lim in made.values():
        lim.close()


def _policy(client_id: str, account: bool, user: bool, trade: bool, sliding: bool = False) -> RateLimitPolicy:
    return RateLimitPolicy(
        client_id=client_id,
        strategy="sliding-window" if sliding else "moving-window",
        budgets=(Budget("customer", "customer", 250, 60),),
        account_budget=Budget("account", "account", 10, 60) if account else None,
        user_budget=Budget("user", "user", 30, 60) if user else None,
        trade_budget=Budget("trade", "trade", 1, 1) if trade else None,
    )


PLACE_ORDER = get_operation("place_order")  # an order write that is not account-scoped


@settings(max_examples=80, deadline=None)
@example(
    calls=[(PLACE_ORDER, "user-1", "acc-1"), (PLACE_ORDER, "user-1", "acc-2")],
    budgets=(True, True, True, False),
    shared=True,
)
@example(
    calls=[(PLACE_ORDER, "user-1", "acc-1"), (PLACE_ORDER, "user-2", "acc-2")],
    budgets=(False, False, True, True),
    shared=False,
)
@example(
    calls=[(BALANCE, "user-1", "acc-1"), (BALANCE, "user-2", "acc-1")], budgets=(True, True, False, False), shared=True
)
@given(
    calls=calls,
    budgets=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    shared=st.booleans(),
)
def test_every_call_draws_on_its_own_buckets_whatever_came_before(
    hashed_limiters: Any, calls: list[tuple[Operation, str | None, str | None]], budgets: Any, shared: bool
) -> None:
    """Plans are reused between calls that draw on the same buckets, never between others: each
    call's buckets are the policy's for its own user and account (keyed hashes on Redis), and what
    the storage derives from them once is what it would derive for the call (the script's KEYS
    and budget fields on Redis, the prepared take on memory), for moving and sliding windows."""
    if shared:
        lim = hashed_limiters(*budgets)
        hashed = keyed_ids("consumer-key-for-hashing", "rate-limit ids")
    else:
        lim = RateLimiter(_policy("keys-memory", *budgets), "memory://", id_secret="ignored on memory")
        hashed = None

    def subject(value: str | None) -> str | None:
        return value if value is None or hashed is None else hashed(value)

    for op, user, account in calls:
        planned = lim._plan_of(op, user, account)
        expected = lim.policy.plan(op, user_id=subject(user), account_id=subject(account))
        assert planned.plan.keys == expected.keys
        assert planned.plan.scopes == expected.scopes
        assert planned.plan.sliding is budgets[3]
        if shared:
            keys, args = script_call(Take(planned.plan.claims, 0.0, budgets[3]), "LIMITS")
            assert planned.memory is None and planned.script == (keys, args[1])
        else:
            prepared = MemoryBudgets.prepare(planned.plan.claims, budgets[3])
            assert planned.script is None and planned.memory == prepared
    if not shared:
        lim.close()


def test_the_plans_kept_are_bounded(client_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limiter_module, "_KEY_SETS", 3)
    lim = RateLimiter(_policy(client_id, True, True, False), "memory://")
    for i in range(3):
        lim._plan_of(BALANCE, f"u{i}", "a")
    assert len(lim._plans) == 3
    lim._plan_of(BALANCE, "u9", "a")
    assert list(lim._plans) == [("get_user_account_balance", "u9", "a")]


# --- usage ---------------------------------------------------------------------------------------------------


def test_usage_figures(client_id: str, clock: FakeClock) -> None:
    policy = RateLimitPolicy(
        client_id=client_id,
        budgets=(Budget("plan-minute", "plan", 4, 60), Budget("customer", "customer", 10, 60)),
        account_budget=Budget("account", "account", 5, 60),
        alert_fraction=0.75,
    )
    lim = RateLimiter(policy, "memory://", clock=clock.time, sleep=clock.sleep)
    for _ in range(3):
        lim.acquire(BALANCE, user_id="u", account_id="acc-1")
    clock.advance(10)
    usage = {(u.name, u.subject): u for u in lim.usage()}
    assert set(usage) == {("plan-minute", None), ("customer", None), ("account", "acc-1")}
    plan = usage[("plan-minute", None)]
    assert (plan.scope, plan.limit, plan.window, plan.used, plan.remaining, plan.fraction) == (
        "plan",
        4,
        60,
        3,
        1,
        0.75,
    )
    assert plan.alert and plan.paused_until is None  # 75% is the alert threshold here
    customer = usage[("customer", None)]
    assert (customer.used, customer.remaining, customer.fraction, customer.alert) == (3, 7, 0.3, False)
    assert clock.now < customer.reset_at <= clock.now + 60
    # SnapTrade asks for a pause: the scope's usage shows it and alerts; plans are never paused.
    lim.observe(BALANCE, account_id="acc-1", status=429, headers={"Retry-After": "30"})
    usage = {(u.name, u.subject): u for u in lim.usage()}
    assert usage[("customer", None)].paused_until == clock.now + 30
    assert usage[("customer", None)].alert
    assert usage[("plan-minute", None)].paused_until is None
    assert usage[("account", "acc-1")].paused_until is None and not usage[("account", "acc-1")].alert
    clock.advance(100)  # every window is over: nothing used, the next slot is free now
    for figure in lim.usage():
        assert (figure.used, figure.remaining, figure.fraction) == (0, figure.limit, 0.0)
        assert figure.reset_at == clock.now
    lim.observe(
        BALANCE, account_id="acc-1", status=429, headers={"X-RateLimit-Account-Remaining": "0", "Retry-After": "20"}
    )
    paused = {(u.name, u.subject): u for u in lim.usage()}[("account", "acc-1")]
    assert (paused.paused_until, paused.alert) == (clock.now + 20, True)
    lim.close()


def test_usage_clamps_what_the_storage_reports(client_id: str, clock: FakeClock) -> None:
    lim = RateLimiter(policy_for(client_id, Budget("customer", "customer", 5, 60)), "memory://", clock=clock.time)
    key = lim.policy.client_keys()[0]
    over = lim._usage(key, clock.now - 5, 9)
    assert (over.used, over.remaining, over.fraction, over.reset_at) == (0, 5, 0.0, clock.now)
    under = lim._usage(key, clock.now + 5, -2)
    assert (under.used, under.remaining, under.fraction, under.reset_at, under.alert) == (
        5,
        0,
        1.0,
        clock.now + 5,
        True,
    )
    lim.close()


# --- a user's budget keys on Redis -------------------------------------------------------------------------


def _redis_keys(client: redis.Redis, client_id: str) -> list[str]:
    return sorted(key.decode() for key in client.scan_iter(match=f"*{client_id}*"))


def test_user_and_account_ids_on_redis_are_keyed_hashes_and_erasure_removes_them(
    client_id: str, redis_url: str
) -> None:
    secret = f"consumer-key-{client_id}"  # erasure finds a user's keys under any client id: ours only
    lim = RateLimiter(_policy(client_id, True, True, True), redis_url, id_secret=secret)
    hashed = keyed_ids(secret, "rate-limit ids")
    client = redis.Redis.from_url(redis_url)
    try:
        lim.acquire(BALANCE, user_id="alice", account_id="acc-a1")
        lim.acquire(BALANCE, user_id="alice", account_id="acc-a2")
        lim.acquire(BALANCE, user_id="bob", account_id="acc-b1")
        lim.acquire(ACCOUNTS, user_id="alice", account_id="acc-b1")  # not account-scoped: bob's bucket is not hers
        lim.acquire(REGISTER, user_id="alice", account_id="acc-b1")  # a write, not account-scoped: nor here
        keys = _redis_keys(client, client_id)
        text = " ".join(keys)
        for clear in ("alice", "bob", "acc-a1", "acc-a2", "acc-b1"):
            assert clear not in text
        for value in ("alice", "bob", "acc-a1", "acc-a2", "acc-b1"):
            assert hashed(value) in text
        assert lim.forget_user("alice") == 3  # her user bucket and her two accounts' buckets
        left = " ".join(_redis_keys(client, client_id))
        assert hashed("alice") not in left and hashed("acc-a1") not in left and hashed("acc-a2") not in left
        assert hashed("bob") in left and hashed("acc-b1") in left and "customer" in left
        assert lim.forget_user("alice") == 0
        assert lim.forget_user("carol") == 0
        # Without a user budget the accounts a user drew on are still found.
        solo = RateLimiter(_policy(client_id, True, False, False), redis_url, id_secret=secret)
        solo.acquire(BALANCE, user_id="dora", account_id="acc-d1")
        solo.acquire(ACCOUNTS, user_id="dora", account_id="acc-b1")
        assert solo.forget_user("dora") == 1
        assert hashed("acc-b1") in " ".join(_redis_keys(client, client_id))
        solo.close()
        clear = RateLimiter(_policy(client_id, True, True, False), "memory://", id_secret=secret)
        assert clear.forget_user("alice") == 0  # memory budgets never leave the process
        clear.close()
    finally:
        for key in client.scan_iter(match=f"*{client_id}*"):
            client.delete(key)
        client.close()
        lim.close()


def test_erasure_on_a_redis_gone_away_is_a_typed_error(client_id: str, redis_process: Any) -> None:
    lim = RateLimiter(_policy(client_id, True, True, False), redis_process.url, id_secret="the-consumer-key")
    lim.acquire(BALANCE, user_id="alice", account_id="acc-a1")
    redis_process.kill()
    with pytest.raises(SnapTradeRateLimiterUnavailableError) as failed:
        lim.forget_user("alice")
    assert failed.value.message.startswith(
        f"The rate-limit storage {limiter_module._safe_url(redis_process.url)} failed while forgetting a user's "
        "budgets ("
    )
    assert failed.value.message.endswith("); the call was not sent.")
    lim.close()


def test_an_async_limiter_takes_the_same_hashed_keys(client_id: str, redis_url: str) -> None:
    async def scenario() -> list[str]:
        lim = AsyncRateLimiter(_policy(client_id, True, True, False), redis_url, id_secret="the-consumer-key")
        await lim.acquire(BALANCE, user_id="alice", account_id="acc-a1")
        await lim.close()
        client = redis.Redis.from_url(redis_url)
        try:
            return _redis_keys(client, client_id)
        finally:
            for key in client.scan_iter(match=f"*{client_id}*"):
                client.delete(key)
            client.close()

    keys = " ".join(asyncio.run(scenario()))
    hashed = keyed_ids("the-consumer-key", "rate-limit ids")
    assert hashed("alice") in keys and hashed("acc-a1") in keys and "alice" not in keys


# --- when Redis goes away, and what the limiter leaves open ---------------------------------------------------


def _connected_clients(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("clients")["connected_clients"]) - 1  # less this one
    finally:
        client.close()


def test_the_limiter_leaves_no_connection_open(client_id: str, redis_process: Any) -> None:
    """The start-up check's connection and the limiter's pool are closed (sync and async)."""
    url = redis_process.url
    policy = _policy(client_id, True, True, False)
    assert _connected_clients(url) == 0
    lim = RateLimiter(policy, url)
    assert _connected_clients(url) == 0  # the start-up check closed its own
    lim.acquire(BALANCE, user_id="u", account_id="a")
    assert _connected_clients(url) == 1
    lim.close()
    assert _connected_clients(url) == 0

    async def run_async() -> None:
        alim = AsyncRateLimiter(policy, url)
        assert _connected_clients(url) == 0
        await alim.acquire(BALANCE, user_id="u", account_id="a")
        await alim.close()

    asyncio.run(run_async())
    assert _connected_clients(url) == 0


def test_a_storage_failure_says_which_storage_doing_what_and_the_driver_error(
    client_id: str, redis_process: Any
) -> None:
    url = redis_process.url
    lim = RateLimiter(_policy(client_id, True, True, False), url, id_secret="the-consumer-key")
    alim = AsyncRateLimiter(_policy(client_id, True, True, False), url)
    lim.acquire(BALANCE, user_id="u", account_id="a")
    redis_process.kill()

    def check(error: SnapTradeRateLimiterUnavailableError, doing: str) -> None:
        assert error.message == (
            f"The rate-limit storage {url} failed while {doing} (ConnectionError); the call was not sent."
        )
        cause = error.__cause__  # docs/errors.md: a redacted stand-in, never the driver's exception
        assert type(cause) is UpstreamCause and error.__suppress_context__
        assert str(cause).startswith("redis.exceptions.ConnectionError: ")
        assert cause.__traceback__ is not None  # where the driver failed

    with pytest.raises(SnapTradeRateLimiterUnavailableError) as failed:
        lim.acquire(BALANCE, user_id="u", account_id="a")
    check(failed.value, "taking budget")
    with pytest.raises(SnapTradeRateLimiterUnavailableError) as failed:
        lim.usage()
    check(failed.value, "reading usage")
    lim.observe(BALANCE, account_id="a", status=200, headers={"X-RateLimit-Remaining": "0"})
    with pytest.raises(SnapTradeRateLimiterUnavailableError) as failed:
        lim.usage()  # the pending report is recorded first
    check(failed.value, "recording feedback")
    with pytest.raises(SnapTradeRateLimiterUnavailableError) as failed:
        lim.forget_user("u")
    check(failed.value, "forgetting a user's budgets")

    async def run_async() -> None:
        with pytest.raises(SnapTradeRateLimiterUnavailableError) as failed:
            await alim.acquire(BALANCE, user_id="u", account_id="a")
        check(failed.value, "taking budget")
        with pytest.raises(SnapTradeRateLimiterUnavailableError) as failed:
            await alim.usage()
        check(failed.value, "reading usage")
        await alim.observe(BALANCE, account_id="a", status=200, headers={"X-RateLimit-Remaining": "0"})
        with pytest.raises(SnapTradeRateLimiterUnavailableError) as failed:
            await alim.usage()
        check(failed.value, "recording feedback")
        await alim.close()

    asyncio.run(run_async())
    lim.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_redis_url_without_the_redis_package_says_what_to_install(
    asynchronous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name == "redis" or name.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    with pytest.raises(SnapTradeConfigurationError) as missing:
        limiter_module._redis_options("redis://:s3cret@cache:6379/0", asynchronous=asynchronous)
    assert missing.value.message == (
        "SNAPTRADE_RATE_LIMIT_STORAGE_URL is redis://:***@cache:6379/0 but the redis package is not installed."
    )
    assert missing.value.hint == "pip install 'aims-snaptrade[redis]'."
