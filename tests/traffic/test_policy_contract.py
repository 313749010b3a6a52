"""The rate-limit policy as a value (docs/traffic-control.md, docs/configuration.md): what the
settings build, what a wrong value is refused with, which budgets and pauses each call draws on,
the margins and noise allowances, and what a refusal says. No storage, no clock."""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aims_snaptrade.errors import (
    SnapTradeBudgetExhaustedError,
    SnapTradeConfigurationError,
    SnapTradeDeadlineExceededError,
)
from aims_snaptrade.operations import OPERATIONS, Operation, get_operation
from aims_snaptrade.ratelimit._policy import PauseBook, Report, ReportBook, SubjectTracker, WaitQueue
from aims_snaptrade.ratelimit.limiter import Budget, RateLimitPolicy, parse_retry_after
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
@example(limit=1, window=1)
@example(limit=True, window=1)
@example(limit=1, window=0)
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


@pytest.mark.parametrize(
    "edge",
    [
        {"max_wait": 0},
        {"safety_margin": 0.0},
        {"default_pause": 0},
        {"alert_fraction": 1},
        {"mode": "fail"},
        {"strategy": "sliding-window"},
    ],
)
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
    rest = {name: value for name, value in overrides.items() if name != "rate_limit_plan"}
    plan = overrides.get("rate_limit_plan", "none")
    built = make_settings(**rest).model_copy(update={"rate_limit_plan": plan})
    with pytest.raises(SnapTradeConfigurationError) as refused:
        RateLimitPolicy.from_settings(built)
    assert refused.value.hint == hint
    assert refused.value.message == message


windows = st.one_of(
    st.sampled_from([1, 1.0, 2, 60.0, 0.5, 1.5, 59.999, 0.0, -60.0, math.inf, -math.inf, math.nan]),
    st.floats(0.01, 200),
)


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
    # The policy checks what it is given, also a copy of the settings made without their checks.
    built = make_settings(**extra).model_copy(update={field: window})
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


# --- what SnapTrade says back ------------------------------------------------------------------------

NOW = 1_800_000_000.0
FEEDBACK_OPERATIONS = [
    get_operation("get_user_account_balance"),  # signed, account-scoped
    get_operation("list_all_user_accounts"),  # signed, not account-scoped
    get_operation("check"),  # unsigned
    get_operation("refresh_brokerage_authorization"),  # its 429 is a cool-down
]
LIMITS = st.sampled_from([None, "5", "250", "300", "many"])
REMAINING = st.sampled_from([None, "0", "-1", "1", "3", "248"])
RESETS = st.sampled_from([None, "0", "12", str(int(NOW) + 30)])
RETRY_AFTER = st.sampled_from([None, "7", "0", "", email.utils.formatdate(NOW + 9, usegmt=True)])


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _expected_feedback(
    policy: RateLimitPolicy, op: Operation, account_id: str | None, headers: dict[str, str], now: float
) -> list[tuple[str, str | None, float | None, float | None, float | None]]:
    """The documented reading: ``(scope, subject, limit, remaining, reset)`` per limit the call touches."""

    def number(name: str) -> float | None:
        value = headers.get(name)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def reset(name: str) -> float | None:
        value = number(name)
        return None if value is None else max(0.0, value - now if value > 1e9 else value)

    found = []
    if op.signed:
        found.append(
            ("customer", None, number("X-RateLimit-Limit"), number("X-RateLimit-Remaining"), reset("X-RateLimit-Reset"))
        )
    if op.account_scoped and account_id:
        found.append(
            (
                "account",
                account_id,
                number("X-RateLimit-Account-Limit"),
                number("X-RateLimit-Account-Remaining"),
                reset("X-RateLimit-Account-Reset"),
            )
        )
    return found


@settings(max_examples=300, deadline=None)
@example(  # the customer budget has room: the account-scoped call was refused by its account
    op=FEEDBACK_OPERATIONS[0],
    account_id="acc-1",
    account_budget=True,
    customer_budget=True,
    sliding=False,
    status=429,
    customer=("250", "3", None),
    account=(None, None, "12"),
    retry_after=None,
    sent=None,
    with_keys=False,
)
@example(  # no customer headers at all: the account's still count
    op=FEEDBACK_OPERATIONS[0],
    account_id="acc-1",
    account_budget=True,
    customer_budget=True,
    sliding=False,
    status=200,
    customer=(None, None, "5"),
    account=("10", "0", "12"),
    retry_after=None,
    sent=0.2,
    with_keys=True,
)
@given(
    op=st.sampled_from(FEEDBACK_OPERATIONS),
    account_id=st.sampled_from([None, "acc-1"]),
    account_budget=st.booleans(),
    customer_budget=st.booleans(),
    sliding=st.booleans(),
    status=st.sampled_from([200, 429, 503]),
    customer=st.tuples(LIMITS, REMAINING, RESETS),
    account=st.tuples(LIMITS, REMAINING, RESETS),
    retry_after=RETRY_AFTER,
    sent=st.sampled_from([None, 0.001, 0.1, 0.125, 0.2, 3.0, -0.5]),
    with_keys=st.booleans(),
)
def test_snaptrades_answer_tightens_the_local_view_as_documented(
    op: Operation,
    account_id: str | None,
    account_budget: bool,
    customer_budget: bool,
    sliding: bool,
    status: int,
    customer: tuple[str | None, str | None, str | None],
    account: tuple[str | None, str | None, str | None],
    retry_after: str | None,
    sent: float | None,
    with_keys: bool,
) -> None:
    """A 429 pauses the limit it came from (Retry-After, else its Reset, else the default pause);
    another answer's lower Remaining is kept as a report for the next check (a hold until Reset at
    0), a Limit below ours logs a warning, absent headers change nothing; slots answered later than
    half the margin are re-stamped to the answer (moving windows, not after a 429)."""
    budgets = [Budget("plan-minute", "plan", 100, 60)]
    if customer_budget:
        budgets.append(Budget("customer", "customer", 250, 10))
    policy = RateLimitPolicy(
        client_id="AIMS-FEEDBACK",
        budgets=tuple(budgets),
        account_budget=Budget("account", "account", 10, 60) if account_budget else None,
        strategy="sliding-window" if sliding else "moving-window",
        default_pause=1.5,
    )
    headers: dict[str, str] = {}
    for prefix, (limit, remaining, reset) in (("X-RateLimit-", customer), ("X-RateLimit-Account-", account)):
        for name, value in (("Limit", limit), ("Remaining", remaining), ("Reset", reset)):
            if value is not None:
                headers[prefix + name] = value
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    sent_at = None if sent is None else NOW - sent
    keys = policy.keys_for(op, user_id="u", account_id=account_id) if with_keys else None
    pauses, reports = PauseBook(), ReportBook()
    warnings = Warnings()
    logger = logging.getLogger("aims_snaptrade.ratelimit.limiter")
    logger.addHandler(warnings)
    try:
        scope = policy.observe(
            op,
            account_id=account_id,
            status=status,
            headers=headers,
            pauses=pauses,
            reports=reports,
            sent_at=sent_at,
            clock=lambda: NOW,
            keys=keys,
        )
    finally:
        logger.removeHandler(warnings)

    moves: dict[str, list[tuple[float, float]]] = {}
    if keys and sent_at is not None and status != 429 and not sliding:
        for key in keys:
            if NOW - sent_at > policy.margin_for(key.budget) / 2:
                moves[key.storage_key] = [(sent_at, NOW)]
    assert reports._moves == moves

    feedback = _expected_feedback(policy, op, account_id, headers, NOW)
    expected_pauses: dict[tuple[str, str | None], float] = {}
    expected_reports: dict[str, Report] = {}
    expected_warnings: list[str] = []
    expected_scope = None
    if status == 429:
        by_scope = {fb[0]: fb for fb in feedback}
        throttled = None
        if op.name != "refresh_brokerage_authorization":
            if "account" in by_scope and by_scope["account"][3] == 0:
                throttled = by_scope["account"]
            elif "customer" in by_scope and by_scope["customer"][3] in (None, 0):
                throttled = by_scope["customer"]
            elif "account" in by_scope:
                throttled = by_scope["account"]
        if throttled is not None:
            wait = parse_retry_after(retry_after, now=NOW)
            if wait is None:
                wait = throttled[4] if throttled[4] is not None else 1.5
            expected_pauses[(throttled[0], throttled[1])] = NOW + wait
            expected_scope = throttled[0]
            if throttled[0] == "account" and not account_budget:
                expected_warnings.append(
                    "SnapTrade throttled an account-level call but no per-account budget is set; "
                    "set SNAPTRADE_ACCOUNT_LIMIT (10 for Personal keys) to avoid these 429s."
                )
    else:
        for scope_name, subject, limit, remaining, reset in feedback:
            if limit is None and remaining is None:
                continue
            if scope_name == "customer":
                if not customer_budget:
                    continue
                budget = budgets[-1]
            else:
                if not account_budget:
                    continue
                assert policy.account_budget is not None
                budget = policy.account_budget
            if limit is not None and limit < budget.limit:
                expected_warnings.append(
                    f"SnapTrade reports a {budget.name} limit of {int(limit)} but the local budget allows "
                    f"{budget.limit}; lower it."
                )
            if remaining is None:
                continue
            key = budget.item.key_for(*(("AIMS-FEEDBACK", budget.name) + ((subject,) if subject else ())))
            expected_reports[key] = Report(
                since=NOW if sent_at is None else min(sent_at, NOW),
                used=int((limit if limit is not None else budget.limit) - max(remaining, 0)),
                noise=max(2, math.ceil(0.05 * budget.limit)),
                hold_until=NOW + reset if remaining <= 0 and reset is not None else None,
            )
    assert scope == expected_scope
    assert pauses._until == expected_pauses
    assert reports._reports == expected_reports
    assert warnings.messages == expected_warnings


def test_a_warning_is_logged_once_per_budget() -> None:
    policy = _policy(False, False, False)
    warnings = Warnings()
    logger = logging.getLogger("aims_snaptrade.ratelimit.limiter")
    logger.addHandler(warnings)
    op = get_operation("get_user_account_balance")
    try:
        for status in (200, 429, 200, 429):
            policy.observe(
                op,
                account_id="acc-1",
                status=status,
                headers={"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4", "X-RateLimit-Account-Remaining": "0"},
                pauses=PauseBook(),
                reports=ReportBook(),
                sent_at=None,
                clock=lambda: NOW,
            )
    finally:
        logger.removeHandler(warnings)
    assert warnings.messages == [
        "SnapTrade reports a customer limit of 5 but the local budget allows 250; lower it.",
        "SnapTrade throttled an account-level call but no per-account budget is set; "
        "set SNAPTRADE_ACCOUNT_LIMIT (10 for Personal keys) to avoid these 429s.",
    ]


# --- the bookkeeping: wait queue, pending reports, pauses, tracked buckets ---------------------------

KEY_SETS = [("a",), ("b",), ("a", "b"), ("b", "c", "a")]
queue_steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.integers(0, len(KEY_SETS) - 1)),
        st.tuples(st.just("leave"), st.integers(0, 9)),
        st.tuples(st.just("taking"), st.integers(0, 9), st.booleans()),
    ),
    max_size=14,
)


@settings(max_examples=200)
@given(steps=queue_steps)
def test_the_wait_queue_counts_the_calls_ahead_on_each_key(steps: list[tuple[Any, ...]]) -> None:
    """Per key, a call is behind every queued call with an earlier ticket under that key, and knows
    when one of those has a check in flight; calls that left count as departures (once each)."""
    queue = WaitQueue()
    waiting: dict[int, tuple[str, ...]] = {}
    taking: set[int] = set()
    tickets: list[int] = []
    departures = 0
    for step in steps:
        if step[0] == "arrive":
            ticket = queue.arrive(KEY_SETS[step[1]])
            assert all(ticket > earlier for earlier in tickets)
            tickets.append(ticket)
            waiting[ticket] = KEY_SETS[step[1]]
        elif tickets:
            ticket = tickets[step[1] % len(tickets)]
            if step[0] == "leave":
                queue.leave(ticket)
                departures += ticket in waiting
                waiting.pop(ticket, None)
                taking.discard(ticket)
            else:
                queue.taking(ticket, step[2])
                if step[2] and ticket in waiting:
                    taking.add(ticket)
                else:
                    taking.discard(ticket)
        assert queue.idle() is (not waiting)
        assert queue.departures() == departures
        for ticket, names in waiting.items():
            for asked in (names, ("c", "a")):
                earlier = [other for other in waiting if other < ticket]
                counts = tuple(sum(name in waiting[other] for other in earlier) for name in asked)
                unsettled = any(other in taking and set(waiting[other]) & set(asked) for other in earlier)
                assert queue.ahead(ticket, asked) == (counts, unsettled)


def test_pending_reports_and_re_stamps_wait_for_their_budgets_next_check() -> None:
    book = ReportBook()
    assert book.empty() and book.pop("a") == (None, ())
    first, newer = Report(1.0, 3, 2), Report(2.0, 5, 2, hold_until=9.0)
    book.put("a", first)
    assert not book.empty()
    book.put("a", newer)  # a newer report replaces an older one
    assert book.pop("b") == (None, ())
    assert book.pop("a") == (newer, ())
    assert book.empty()
    book.move("a", 1.0, 1.5)
    assert not book.empty()
    book.move("a", 2.0, 2.5)
    assert book.pop("a") == (None, ((1.0, 1.5), (2.0, 2.5)))
    assert book.empty()
    # Given back unrecorded: kept ahead of what came meanwhile, a newer report stays.
    book.put("a", newer)
    book.move("a", 3.0, 3.5)
    book.restore("a", first, ((1.0, 1.5), (2.0, 2.5)))
    book.restore("b", first, ())
    book.restore("c", None, ((4.0, 4.5),))
    assert book.pop("a") == (newer, ((1.0, 1.5), (2.0, 2.5), (3.0, 3.5)))
    assert book.pop("b") == (first, ())
    assert book.pop("c") == (None, ((4.0, 4.5),))
    assert book.empty()


def test_re_stamps_kept_per_budget_are_bounded() -> None:
    """256 re-stamps per budget until its next check (a bound, should checks stop), restored too."""
    book = ReportBook()
    for i in range(300):
        book.move("a", float(i), i + 0.5)
    _, moves = book.pop("a")
    assert moves == tuple((float(i), i + 0.5) for i in range(256))
    book.move("a", 999.0, 999.5)
    book.restore("a", None, moves)
    _, again = book.pop("a")
    assert again == (*moves[:255], (999.0, 999.5))
    for i in range(256):
        book.move("a", float(i), i + 0.5)
    book.restore("a", None, ((7.0, 7.5),))  # full: nothing more is kept
    assert len(book.pop("a")[1]) == 256


def test_pauses_are_per_scope_and_subject_and_end_at_their_end() -> None:
    book = PauseBook()
    assert book.until("customer", None, 0.0) is None
    book.pause("account", "acc-1", 10.0)
    book.pause("customer", None, 4.0)
    assert book.until("account", None, 0.0) is None
    assert book.until("customer", "acc-1", 0.0) is None
    assert book.until("account", "acc-1", 9.999) == 10.0
    assert book.until("customer", None, 3.0) == 4.0
    assert book.until("customer", None, 4.0) is None  # over at its end, and forgotten
    assert book._until == {("account", "acc-1"): 10.0}


def _tracked(tracker: SubjectTracker) -> list[tuple[str, str | None]]:
    return [(k.budget.name, k.subject) for k in tracker.keys()]  # noqa: SIM118 (a method, not a dict's)


def test_the_tracker_remembers_the_most_recently_used_subject_buckets() -> None:
    policy = _policy(True, True, False)
    op = get_operation("get_user_account_balance")
    tracker = SubjectTracker(size=3)
    plans = [policy.plan(op, user_id=f"u{i}", account_id=f"a{i}").subjects for i in range(3)]
    assert all(len(subjects) == 2 for subjects in plans)
    tracker.add(plans[0])
    assert _tracked(tracker) == [("account", "a0"), ("user", "u0")]
    tracker.add(plans[1])  # a0 and u0 are the oldest: a0 goes
    assert _tracked(tracker) == [("user", "u0"), ("account", "a1"), ("user", "u1")]
    tracker.add(plans[0])  # used again: the newest
    assert _tracked(tracker) == [("user", "u1"), ("account", "a0"), ("user", "u0")]
    tracker.add(plans[2])
    tracker.add(plans[2])
    assert _tracked(tracker) == [("user", "u0"), ("account", "a2"), ("user", "u2")]
    client_wide = tuple(policy.client_keys())
    tracker.add(client_wide)  # client-wide buckets are reported anyway: not tracked
    tracker.add((client_wide[0], plans[2][0]))  # among others, the subject buckets are
    assert [subject for _, subject in _tracked(tracker)] == ["u0", "u2", "a2"]
