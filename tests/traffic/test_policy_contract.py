"""The rate-limit policy as a value (docs/traffic-control.md, docs/configuration.md): what the
settings build, what a wrong value is refused with, which budgets and pauses each call draws on,
the margins and noise allowances, and what a refusal says. No storage, no clock."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade.errors import (
    SnapTradeBudgetExhaustedError,
    SnapTradeConfigurationError,
    SnapTradeDeadlineExceededError,
)
from aims_snaptrade.operations import OPERATIONS, Operation, get_operation
from aims_snaptrade.ratelimit.limiter import Budget, RateLimitPolicy
from aims_snaptrade.settings import Settings

MakeSettings = Callable[..., Settings]


# --- budgets and policy values -------------------------------------------------------------------

values = st.one_of(
    st.integers(-3, 5),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1.0, 2.0, "2", None]),
)


@settings(max_examples=80)
@given(limit=values, window=values)
def test_a_budget_is_whole_requests_per_whole_seconds(limit: Any, window: Any) -> None:
    """A budget takes whole numbers >= 1 (not booleans, not floats) and says which field is wrong."""
    whole = {
        name: isinstance(v, int) and not isinstance(v, bool) and v >= 1 for name, v in (("l", limit), ("w", window))
    }
    if whole["l"] and whole["w"]:
        budget = Budget("b", "customer", limit, window)
        assert (budget.limit, budget.window) == (limit, window)
        return
    with pytest.raises(SnapTradeConfigurationError) as refused:
        Budget("b", "customer", limit, window)
    if not whole["l"]:
        expected = f"Rate budget 'b': limit must be a whole number of requests >= 1, got {limit!r}."
    else:
        expected = f"Rate budget 'b': window must be whole seconds >= 1, got {window!r}."
    assert refused.value.message == expected


CUSTOMER = Budget("customer", "customer", 5, 60)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"client_id": ""}, "client_id must be a non-empty string"),
        ({"client_id": 7}, "client_id must be a non-empty string"),
        ({"strategy": "fixed-window"}, "strategy must be one of moving-window, sliding-window, got 'fixed-window'"),
        ({"mode": "block"}, "mode must be 'wait' or 'fail', got 'block'"),
        ({"max_wait": -1}, "max_wait must be finite seconds >= 0, got -1"),
        ({"max_wait": math.inf}, "max_wait must be finite seconds >= 0, got inf"),
        ({"max_wait": "3"}, "max_wait must be finite seconds >= 0, got '3'"),
        ({"safety_margin": -0.5}, "safety_margin must be finite seconds >= 0, got -0.5"),
        ({"safety_margin": math.nan}, "safety_margin must be finite seconds >= 0, got nan"),
        ({"default_pause": -2.0}, "default_pause must be finite seconds >= 0, got -2.0"),
        ({"alert_fraction": 0}, "alert_fraction must be in (0, 1], got 0"),
        ({"alert_fraction": 1.5}, "alert_fraction must be in (0, 1], got 1.5"),
        (
            {"budgets": (CUSTOMER, Budget("customer", "plan", 9, 60))},
            "budget names must be unique, got ['customer', 'customer']",
        ),
    ],
)
def test_each_wrong_policy_value_is_named(fields: dict[str, Any], problem: str) -> None:
    values: dict[str, Any] = {"client_id": "AIMS-TEST", "budgets": (CUSTOMER,), **fields}
    with pytest.raises(SnapTradeConfigurationError) as refused:
        RateLimitPolicy(**values)
    assert refused.value.message == f"Invalid rate-limit policy: {problem}."


def test_every_wrong_policy_value_is_named_at_once() -> None:
    with pytest.raises(SnapTradeConfigurationError) as refused:
        RateLimitPolicy(client_id="", budgets=(), mode="x", default_pause=-1)  # type: ignore[arg-type]
    assert refused.value.message == (
        "Invalid rate-limit policy: client_id must be a non-empty string; mode must be 'wait' or 'fail', "
        "got 'x'; default_pause must be finite seconds >= 0, got -1."
    )


@pytest.mark.parametrize("edge", [{"max_wait": 0}, {"safety_margin": 0.0}, {"default_pause": 0}, {"alert_fraction": 1}])
def test_the_edges_of_the_policy_values_are_allowed(edge: dict[str, Any]) -> None:
    policy = RateLimitPolicy(client_id="AIMS-TEST", budgets=(CUSTOMER,), **edge)
    [(name, value)] = edge.items()
    assert getattr(policy, name) == value


# --- settings -> policy ----------------------------------------------------------------------------


def test_the_policy_is_exactly_what_the_settings_say(make_settings: MakeSettings) -> None:
    policy = RateLimitPolicy.from_settings(
        make_settings(
            client_id="AIMS-EXACT",
            rate_limit_plan=" Custom ",
            rate_limit_per_minute=40,
            rate_limit_per_day=900,
            customer_limit=200,
            customer_limit_window=30.0,
            account_limit=8,
            account_limit_window=20,
            user_limit_per_minute=12,
            trade_limit_per_account=2,
            trade_limit_window=3,
            rate_limit_strategy="sliding-window",
            rate_limit_mode="fail",
            rate_limit_max_wait=4.5,
        )
    )
    assert policy.client_id == "AIMS-EXACT"
    assert policy.budgets == (
        Budget("plan-minute", "plan", 40, 60),
        Budget("plan-day", "plan", 900, 86400),
        Budget("customer", "customer", 200, 30),
    )
    assert policy.account_budget == Budget("account", "account", 8, 20)
    assert policy.user_budget == Budget("user", "user", 12, 60)
    assert policy.trade_budget == Budget("trade", "trade", 2, 3)
    assert (policy.strategy, policy.mode, policy.max_wait) == ("sliding-window", "fail", 4.5)
    for budget in (*policy.budgets, policy.account_budget, policy.user_budget, policy.trade_budget):
        assert type(budget.window) is int


def test_a_preset_plan_takes_its_own_windows(make_settings: MakeSettings) -> None:
    policy = RateLimitPolicy.from_settings(make_settings(rate_limit_plan="GROWTH"))
    assert policy.budgets == (
        Budget("plan-minute", "plan", 120, 60),
        Budget("plan-hour", "plan", 5000, 3600),
        Budget("plan-day", "plan", 50000, 86400),
        Budget("customer", "customer", 250, 60),
    )
    assert (policy.account_budget, policy.user_budget) == (None, None)
    assert policy.trade_budget == Budget("trade", "trade", 1, 1)  # SnapTrade: one trade per account per second
    off = RateLimitPolicy.from_settings(make_settings(trade_limit_per_account=None))
    assert off.trade_budget is None
    enterprise = RateLimitPolicy.from_settings(make_settings(rate_limit_plan="enterprise", rate_limit_per_hour=70))
    assert enterprise.budgets[0] == Budget("plan-hour", "plan", 70, 3600)


@pytest.mark.parametrize(
    ("overrides", "message", "hint"),
    [
        (
            {"rate_limit_plan": "starter", "rate_limit_per_minute": 5, "rate_limit_per_day": 9},
            "SNAPTRADE_RATE_LIMIT_PLAN=starter is a preset, but SNAPTRADE_RATE_LIMIT_PER_MINUTE, "
            "SNAPTRADE_RATE_LIMIT_PER_DAY is also set.",
            "Use SNAPTRADE_RATE_LIMIT_PLAN=custom to set your own per-window values.",
        ),
        (
            {"rate_limit_plan": "enterprise"},
            "SNAPTRADE_RATE_LIMIT_PLAN=enterprise needs its own values, and none is set.",
            "Set at least one of SNAPTRADE_RATE_LIMIT_PER_MINUTE, _PER_HOUR, _PER_DAY.",
        ),
        (
            {"rate_limit_per_hour": 5},
            "SNAPTRADE_RATE_LIMIT_PER_HOUR is set but SNAPTRADE_RATE_LIMIT_PLAN is 'none'.",
            "Set SNAPTRADE_RATE_LIMIT_PLAN=custom to apply them, or unset them.",
        ),
        (
            {"rate_limit_plan": "platinum"},  # past the settings' own check (a copy made without it)
            "SNAPTRADE_RATE_LIMIT_PLAN='platinum' is not a plan.",
            "Use one of none, starter, growth, enterprise, custom.",
        ),
    ],
)
def test_wrong_plan_settings_say_what_to_change(
    make_settings: MakeSettings, overrides: dict[str, Any], message: str, hint: str
) -> None:
    plan = overrides.pop("rate_limit_plan", "none")
    built = make_settings(**overrides).model_copy(update={"rate_limit_plan": plan})
    with pytest.raises(SnapTradeConfigurationError) as refused:
        RateLimitPolicy.from_settings(built)
    assert refused.value.hint == hint
    assert refused.value.message == message


windows = st.one_of(st.sampled_from([1, 1.0, 2, 60.0, 0.5, 1.5, 59.999, math.inf]), st.floats(0.01, 200))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    setting=st.sampled_from(
        [
            ("customer_limit_window", {}, "SNAPTRADE_CUSTOMER_LIMIT_WINDOW"),
            ("account_limit_window", {"account_limit": 10}, "SNAPTRADE_ACCOUNT_LIMIT_WINDOW"),
            ("trade_limit_window", {"trade_limit_per_account": 1}, "SNAPTRADE_TRADE_LIMIT_WINDOW"),
        ]
    ),
    window=windows,
)
def test_windows_must_be_whole_seconds(make_settings: MakeSettings, setting: Any, window: float) -> None:
    """limits counts windows in whole seconds: 60.0 is a minute, 1.5 is refused, naming the setting."""
    field, extra, variable = setting
    try:
        built = make_settings(**{field: window}, **extra)
    except SnapTradeConfigurationError:
        return  # the settings themselves refuse it (not finite)
    if math.isfinite(window) and window >= 1 and window == int(window):
        policy = RateLimitPolicy.from_settings(built)
        budget = {
            "customer_limit_window": policy.budgets[-1],
            "account_limit_window": policy.account_budget,
            "trade_limit_window": policy.trade_budget,
        }[field]
        assert budget is not None and budget.window == int(window)
        return
    with pytest.raises(SnapTradeConfigurationError) as refused:
        RateLimitPolicy.from_settings(built)
    assert refused.value.message == (
        f"{variable} must be a whole number of seconds >= 1 (limits counts windows in seconds), got {window!r}."
    )


# --- which budgets and pauses a call draws on ------------------------------------------------------

ALL_OPERATIONS = sorted(OPERATIONS.values(), key=lambda op: op.name)


def _policy(account: bool, user: bool, trade: bool, **kwargs: Any) -> RateLimitPolicy:
    return RateLimitPolicy(
        client_id="AIMS-KEYS",
        budgets=(Budget("plan-hour", "plan", 900, 3600), Budget("customer", "customer", 250, 60)),
        account_budget=Budget("account", "account", 10, 60) if account else None,
        user_budget=Budget("user", "user", 30, 60) if user else None,
        trade_budget=Budget("trade", "trade", 1, 1) if trade else None,
        **kwargs,
    )


@settings(max_examples=150)
@given(
    op=st.sampled_from(ALL_OPERATIONS),
    budgets=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    user_id=st.sampled_from([None, "", "user-1"]),
    account_id=st.sampled_from([None, "", "acc-1"]),
)
def test_a_call_draws_on_exactly_the_budgets_that_apply_to_it(
    op: Operation, budgets: tuple[bool, bool, bool], user_id: str | None, account_id: str | None
) -> None:
    """Plan budgets always; the customer budget for signed requests; the account bucket for an
    account-scoped call given an account; the user budget for a user-scoped call given a user; the
    trade bucket for an order write given an account. Tightest first."""
    policy = _policy(*budgets)
    keys = policy.keys_for(op, user_id=user_id, account_id=account_id)
    expected = {("plan-hour", None)}
    if op.signed:
        expected.add(("customer", None))
    if budgets[0] and op.account_scoped and account_id:
        expected.add(("account", account_id))
    if budgets[1] and op.user_scoped and user_id:
        expected.add(("user", user_id))
    if budgets[2] and op.trading and not op.idempotent and account_id:
        expected.add(("trade", account_id))
    assert sorted((k.budget.name, k.subject) for k in keys) == sorted(expected)
    assert [(k.budget.limit, k.budget.window) for k in keys] == sorted((k.budget.limit, k.budget.window) for k in keys)
    for key in keys:
        assert key.identifiers == ("AIMS-KEYS", key.budget.name, *([key.subject] if key.subject else []))
        assert key.storage_key == key.budget.item.key_for(*key.identifiers)
    plan = policy.plan(op, user_id=user_id, account_id=account_id)
    assert plan.keys == keys
    assert plan.names == tuple(key.storage_key for key in keys)
    assert [(c.key, c.amount, c.depth, c.report, c.moves) for c in plan.claims] == [(k, 1, 0, None, ()) for k in keys]
    assert [c.margin for c in plan.claims] == [policy.margin_for(k.budget) for k in keys]
    assert plan.subjects == tuple(k for k in keys if k.subject is not None)
    assert plan.sliding is False
    scopes = [("customer", None)] if op.signed else []
    if op.account_scoped and account_id:
        scopes.append(("account", account_id))
    assert list(plan.scopes) == scopes


def test_the_sorting_puts_the_tightest_budget_first() -> None:
    policy = RateLimitPolicy(
        client_id="AIMS-KEYS",
        budgets=(Budget("plan-day", "plan", 900, 86400), Budget("plan-minute", "plan", 900, 60)),
        account_budget=Budget("account", "account", 10, 60),
        strategy="sliding-window",
    )
    keys = policy.keys_for(get_operation("get_user_account_balance"), user_id="u", account_id="a")
    assert [k.budget.name for k in keys] == ["account", "plan-minute", "plan-day"]
    assert policy.plan(get_operation("check"), user_id=None, account_id=None).sliding is True
    assert [(k.budget, k.subject, k.identifiers) for k in policy.client_keys()] == [
        (b, None, ("AIMS-KEYS", b.name)) for b in policy.budgets
    ]


@settings(max_examples=60)
@given(
    window=st.integers(1, 200_000),
    limit=st.integers(1, 100_000),
    margin=st.floats(0, 5),
    sliding=st.booleans(),
)
def test_margins_and_noise(window: int, limit: int, margin: float, sliding: bool) -> None:
    """A freed slot waits min(safety margin, 2% of the window) (none for the sliding counter);
    reported counts within max(2, 5% of the limit) of ours are noise."""
    policy = RateLimitPolicy(
        client_id="AIMS-M",
        budgets=(),
        safety_margin=margin,
        strategy="sliding-window" if sliding else "moving-window",
    )
    budget = Budget("customer", "customer", limit, window)
    assert policy.margin_for(budget) == (0.0 if sliding else min(margin, 0.02 * window))
    assert RateLimitPolicy.feedback_noise(budget) == max(2, math.ceil(0.05 * limit))


# --- what a refusal says -----------------------------------------------------------------------------

ACCOUNTS = get_operation("list_all_user_accounts")


@pytest.mark.parametrize(
    ("kwargs", "kind", "text"),
    [
        (
            {"scope": "customer", "name": "customer", "subject": None, "paused": False, "waited": 0.0},
            SnapTradeBudgetExhaustedError,
            "Not sent: the local customer budget is exhausted; the next slot frees in 1.23 s.",
        ),
        (
            {"scope": "account", "name": "account", "subject": "acc-9", "paused": False, "waited": 0.01},
            SnapTradeBudgetExhaustedError,
            "Not sent: the local account budget of 'acc-9' is exhausted after waiting 0.01 s; "
            "the next slot frees in 1.23 s.",
        ),
        (
            {"scope": "account", "name": "account", "subject": "acc-9", "paused": True, "waited": 0.009},
            SnapTradeBudgetExhaustedError,
            "Not sent: SnapTrade asked to pause the account rate limit; the next slot frees in 1.23 s.",
        ),
        (
            {
                "scope": "plan",
                "name": "plan-hour",
                "subject": None,
                "paused": False,
                "waited": 2.5,
                "deadline_left": 0.5,
            },
            SnapTradeDeadlineExceededError,
            "Not sent: the local plan-hour budget is exhausted and the call's deadline ends in 0.50 s after "
            "waiting 2.50 s, before the next slot frees in 1.23 s.",
        ),
        (
            {"scope": "customer", "name": "customer", "subject": None, "paused": True, "waited": 0, "deadline_left": 0},
            SnapTradeDeadlineExceededError,
            "Not sent: SnapTrade asked to pause the customer rate limit and the call's deadline ends in 0.00 s, "
            "before the next slot frees in 1.23 s.",
        ),
    ],
)
def test_a_refusal_says_what_was_exhausted_and_when_it_frees(
    kwargs: dict[str, Any], kind: type[Exception], text: str
) -> None:
    error = _policy(False, False, False).refusal(ACCOUNTS, retry_after=1.23456, **kwargs)
    assert type(error) is kind
    assert error.message == text
    assert error.retry_after == 1.235
    assert error.limit_scope == kwargs["scope"]
    assert error.operation == "list_all_user_accounts"
    assert error.status is None
    if isinstance(error, SnapTradeDeadlineExceededError):
        assert error.waiting_for == ("rate-limit pause" if kwargs["paused"] else "rate-limit budget")
