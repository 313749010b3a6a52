"""Retry policies driven by tenacity's own Retrying / AsyncRetrying, with recorded (not real) sleeps."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
import tenacity

from aims_snaptrade.errors import (
    SnapTradeAuthError,
    SnapTradeBrokerageUnavailableError,
    SnapTradeBudgetExhaustedError,
    SnapTradeConfigurationError,
    SnapTradeConflictError,
    SnapTradeConnectionError,
    SnapTradeDataNotReadyError,
    SnapTradeError,
    SnapTradeGuardrailError,
    SnapTradeNotFoundError,
    SnapTradePermissionError,
    SnapTradeRateLimitError,
    SnapTradeRateLimiterUnavailableError,
    SnapTradeServerError,
    SnapTradeTimeoutError,
    SnapTradeUnknownOutcomeError,
    SnapTradeValidationError,
)
from aims_snaptrade.operations import Operation, get_operation
from aims_snaptrade.retry import RetryBudget, RetryPolicy, should_retry

READ = get_operation("list_all_user_accounts")
ORDER = get_operation("place_force_order")  # write with client_order_id
CRYPTO = get_operation("place_crypto_order")  # write without an idempotency key
REGISTER = get_operation("register_snap_trade_user")


class Clock:
    """A monotonic clock for tenacity that only the recorded sleeps move."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Installs itself as tenacity's ``time`` so deadlines follow the recorded sleeps."""
    fake = Clock()
    monkeypatch.setattr(tenacity, "time", fake)
    return fake


def run(
    policy: RetryPolicy,
    op: Operation,
    outcomes: list[Any],
    clock: Clock,
    *,
    key: bool = False,
    spend: float = 0.0,
) -> tuple[Any, int]:
    """Drive ``outcomes`` (exceptions raised in turn, else returned) through tenacity.Retrying."""
    calls = 0

    def attempt() -> Any:
        nonlocal calls
        calls += 1
        clock.now += spend
        outcome = outcomes[min(calls, len(outcomes)) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    result: Any = None
    try:
        for attempt_manager in tenacity.Retrying(
            sleep=clock.sleep, **policy.tenacity_kwargs(op, has_idempotency_key=key)
        ):
            with attempt_manager:
                result = attempt()
    except SnapTradeError as error:
        return error, calls
    return result, calls


def throttled(retry_after: float | None = 7.0) -> SnapTradeRateLimitError:
    return SnapTradeRateLimitError("throttled", status=429, retry_after=retry_after, limit_scope="customer")


def lost_response() -> SnapTradeConnectionError:
    return SnapTradeConnectionError("connection reset after send", request_sent=True)


# --- presets ---------------------------------------------------------------------------------------


def test_presets() -> None:
    none, standard, patient = (RetryPolicy.preset(n) for n in ("none", "standard", "patient"))
    assert none.max_attempts == 1
    assert (standard.max_attempts, standard.deadline, standard.max_delay) == (3, 30.0, 8.0)
    assert patient.max_attempts > standard.max_attempts
    assert (patient.deadline or 0) > (standard.deadline or 0)
    assert not any(p.retry_idempotent_writes for p in (none, standard, patient))
    assert RetryPolicy.preset(" Standard ").name == "standard"
    assert RetryPolicy.preset("standard").budget is not RetryPolicy.preset("standard").budget


@pytest.mark.parametrize("name", ["aggressive", "", "botocore"])
def test_unknown_preset_is_a_configuration_error(name: str) -> None:
    with pytest.raises(SnapTradeConfigurationError, match="Unknown retry policy"):
        RetryPolicy.preset(name)


@pytest.mark.parametrize(
    "values",
    [{"max_attempts": 0}, {"deadline": -1}, {"initial_delay": -0.1}, {"max_delay": 0.1, "initial_delay": 1}],
)
def test_bad_policy_values_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(SnapTradeConfigurationError):
        RetryPolicy(**values)
    with pytest.raises(SnapTradeConfigurationError):
        RetryBudget(capacity=0)


def test_replace_keeps_the_shared_budget() -> None:
    policy = RetryPolicy.preset("standard")
    assert dataclasses.replace(policy, max_attempts=1).budget is policy.budget


# --- the decision table ----------------------------------------------------------------------------

NEVER = [
    SnapTradeAuthError("bad key", status=401, code="1076"),
    SnapTradeValidationError("bad input", status=400),
    SnapTradeNotFoundError("no such account", status=404),
    SnapTradePermissionError("not enabled", status=403),
    SnapTradeConflictError("exists", status=409),
    SnapTradeGuardrailError("trading disabled"),
    SnapTradeConfigurationError("bad settings"),
    SnapTradeRateLimiterUnavailableError("redis gone"),
    SnapTradeUnknownOutcomeError("lost"),
    SnapTradeBudgetExhaustedError("local budget", retry_after=3, limit_scope="plan"),
    SnapTradeServerError("flagged not retryable", status=500, retryable=False),
    ValueError("not ours"),
]


@pytest.mark.parametrize("error", NEVER, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("op", [READ, ORDER, CRYPTO], ids=lambda o: o.name)
def test_never_retried(error: BaseException, op: Operation) -> None:
    assert not should_retry(op, error, has_idempotency_key=True, retry_idempotent_writes=True)


TRANSIENT = [
    SnapTradeConnectionError("refused", request_sent=False),
    lost_response(),
    SnapTradeTimeoutError("read timeout"),
    throttled(),
    SnapTradeServerError("boom", status=500),
    SnapTradeBrokerageUnavailableError("broker down", status=503, code="3002"),
    SnapTradeDataNotReadyError("syncing", status=425, code="3012"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_reads_retry_every_transient_error(error: SnapTradeError) -> None:
    assert should_retry(READ, error, has_idempotency_key=False, retry_idempotent_writes=False)


@pytest.mark.parametrize(
    ("error", "key", "allowed", "expected"),
    [
        (SnapTradeConnectionError("refused", request_sent=False), False, False, True),  # never left
        (throttled(), False, False, True),  # SnapTrade refused it unexecuted
        (lost_response(), False, True, False),  # may have been placed, no key
        (SnapTradeTimeoutError("read timeout"), False, True, False),
        (SnapTradeServerError("boom", status=500), False, True, False),
        (lost_response(), True, False, False),  # key, but the policy does not allow it
        (lost_response(), True, True, True),  # key and the policy allows it
        (SnapTradeServerError("boom", status=500), True, True, True),
    ],
)
def test_writes_are_resent_only_when_provably_safe(
    error: SnapTradeError, key: bool, allowed: bool, expected: bool
) -> None:
    assert should_retry(ORDER, error, has_idempotency_key=key, retry_idempotent_writes=allowed) is expected
    # A write without an idempotency parameter never counts as keyed.
    if not (isinstance(error, SnapTradeRateLimitError) or getattr(error, "request_sent", True) is False):
        assert not should_retry(CRYPTO, error, has_idempotency_key=True, retry_idempotent_writes=True)


# --- through tenacity ------------------------------------------------------------------------------


def test_429_retry_after_delays_the_next_attempt_at_least_that_long(clock: Clock) -> None:
    policy = RetryPolicy(max_attempts=3, deadline=60, initial_delay=0.1, max_delay=1)
    result, calls = run(policy, READ, [throttled(7.0), "ok"], clock)
    assert (result, calls) == ("ok", 2)
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] >= 7.0


def test_backoff_is_exponential_with_full_jitter_and_a_cap(clock: Clock) -> None:
    policy = RetryPolicy(max_attempts=8, deadline=None, initial_delay=1, max_delay=4)
    error, calls = run(policy, READ, [SnapTradeServerError("boom", status=500)], clock)
    assert calls == 8
    assert isinstance(error, SnapTradeServerError)
    windows = [1, 2, 4, 4, 4, 4, 4]
    assert all(0 <= s <= w for s, w in zip(clock.sleeps, windows, strict=True))
    assert len(set(clock.sleeps)) > 1  # jittered, not fixed
    fixed = Clock()
    fixed_policy = dataclasses.replace(policy, full_jitter=False)
    run(fixed_policy, READ, [SnapTradeServerError("boom", status=500)], fixed)
    assert fixed.sleeps == [1, 2, 4, 4, 4, 4, 4]


@pytest.mark.parametrize(
    "error",
    [SnapTradeAuthError("bad signature", status=401, code="1076"), SnapTradeValidationError("bad", status=400)],
    ids=["401", "400"],
)
def test_401_and_400_are_attempted_exactly_once(clock: Clock, error: SnapTradeError) -> None:
    raised, calls = run(RetryPolicy.preset("patient"), READ, [error, "ok"], clock)
    assert raised is error
    assert calls == 1
    assert clock.sleeps == []


def test_unknown_outcome_is_never_retried(clock: Clock) -> None:
    outcome = SnapTradeUnknownOutcomeError("lost")
    policy = RetryPolicy(max_attempts=5, retry_idempotent_writes=True)
    raised, calls = run(policy, ORDER, [outcome, "ok"], clock, key=True)
    assert raised is outcome
    assert calls == 1


def test_lost_response_to_a_write_without_key_is_sent_once(clock: Clock) -> None:
    raised, calls = run(RetryPolicy.preset("patient"), CRYPTO, [lost_response(), "ok"], clock)
    assert isinstance(raised, SnapTradeConnectionError)
    assert calls == 1
    raised, calls = run(RetryPolicy.preset("patient"), REGISTER, [lost_response(), "ok"], clock)
    assert calls == 1


def test_keyed_write_is_resent_only_when_the_policy_allows(clock: Clock) -> None:
    _, calls = run(RetryPolicy.preset("standard"), ORDER, [lost_response(), "ok"], clock, key=True)
    assert calls == 1
    allowing = dataclasses.replace(RetryPolicy.preset("standard"), retry_idempotent_writes=True)
    result, calls = run(allowing, ORDER, [lost_response(), "ok"], clock, key=True)
    assert (result, calls) == ("ok", 2)


def test_retry_budget_stops_retries_during_a_sustained_outage(clock: Clock) -> None:
    budget = RetryBudget(capacity=20, retry_cost=5, success_refill=1)
    policy = RetryPolicy(max_attempts=10, deadline=None, initial_delay=0.01, max_delay=0.01, budget=budget)
    outage = SnapTradeServerError("down", status=503)
    attempts = [run(policy, READ, [outage], clock)[1] for _ in range(10)]
    # 20 tokens pay for 4 retries in all; then each call makes its single attempt.
    assert sum(attempts) == 10 + 4
    assert attempts[0] == 5
    assert attempts[1:] == [1] * 9
    assert budget.available < budget.retry_cost
    stats = policy.stats.snapshot()
    assert stats["attempts"] == 14
    assert stats["retries"] == 4
    assert stats["budget_refusals"] == 10
    # Recovery refills it: a success after a retry refunds that retry, plain successes add one.
    for _ in range(5):
        run(policy, READ, ["ok"], clock)
    assert budget.available >= budget.retry_cost
    result, calls = run(policy, READ, [outage, "ok"], clock)
    assert (result, calls) == ("ok", 2)
    assert budget.available >= 5


def test_overall_deadline_is_never_slept_past(clock: Clock) -> None:
    policy = RetryPolicy(max_attempts=50, deadline=10, initial_delay=1, max_delay=4, full_jitter=False)
    start = clock.now
    error, calls = run(policy, READ, [SnapTradeServerError("boom", status=500)], clock, spend=0.5)
    assert isinstance(error, SnapTradeServerError)
    assert clock.now - start <= 10
    assert 1 < calls < 50
    # A retry_after beyond the deadline stops at once instead of sleeping into it.
    sleeps_before = len(clock.sleeps)
    error, calls = run(policy, READ, [throttled(60)], clock)
    assert calls == 1
    assert len(clock.sleeps) == sleeps_before


def test_retries_are_logged_with_fields_but_no_message(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    error = SnapTradeServerError(
        "upstream said userSecret=abcdef123456", status=502, code="1000", request_id="req-42", operation=READ.name
    )
    with caplog.at_level(logging.WARNING, logger="aims_snaptrade.retry"):
        run(
            RetryPolicy(max_attempts=2, initial_delay=0.5, max_delay=0.5, full_jitter=False), READ, [error, "ok"], clock
        )
    (record,) = [r for r in caplog.records if r.name == "aims_snaptrade.retry"]
    text = record.getMessage()
    assert record.levelno == logging.WARNING
    for part in (
        "list_all_user_accounts",
        "SnapTradeServerError",
        "status=502",
        "code=1000",
        "request_id=req-42",
        "0.50 s",
        "attempt 1 of 2",
    ):
        assert part in text
    assert "abcdef123456" not in text
    assert "upstream said" not in text


async def test_async_retrying_takes_the_same_kwargs(clock: Clock) -> None:
    policy = RetryPolicy(max_attempts=3, deadline=60, initial_delay=0.1, max_delay=1)
    outcomes: list[Any] = [throttled(2.0), SnapTradeServerError("boom", status=500), "ok"]
    calls = 0
    result = None
    async for attempt in tenacity.AsyncRetrying(
        sleep=clock.asleep, **policy.tenacity_kwargs(READ, has_idempotency_key=False)
    ):
        with attempt:
            calls += 1
            outcome = outcomes[calls - 1]
            if isinstance(outcome, BaseException):
                raise outcome
            result = outcome
    assert (result, calls) == ("ok", 3)
    assert clock.sleeps[0] >= 2.0
    auth_calls = 0

    async def refused_credentials() -> None:
        nonlocal auth_calls
        async for attempt in tenacity.AsyncRetrying(
            sleep=clock.asleep, **policy.tenacity_kwargs(READ, has_idempotency_key=False)
        ):
            with attempt:
                auth_calls += 1
                raise SnapTradeAuthError("no", status=401)

    with pytest.raises(SnapTradeAuthError):
        await refused_credentials()
    assert auth_calls == 1


def test_stats_count_attempts_and_retries(clock: Clock) -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.01)
    run(policy, READ, [SnapTradeServerError("x", status=500), "ok"], clock)
    run(policy, READ, ["ok"], clock)
    assert policy.stats.snapshot() == {"attempts": 3, "retries": 1, "successes": 2, "budget_refusals": 0}
