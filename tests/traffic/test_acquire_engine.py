"""The acquire engine without a storage (docs/traffic-control.md, "Waiting or failing" and
"Deadlines"): driven step by step with scripted answers to its composed checks and a clock that
moves only when it pauses, so every bound is checked exactly.

- a refused check is waited out, for the longest wait any budget (or pause) names, at least
  ``_MIN_PAUSE``; never past ``min(max_wait, deadline)``: a wait ending later is refused at once,
  with ``retry_after`` that wait, the scope and budget it came from, and the time already waited;
- the deadline, when it is the shorter bound, makes the refusal a ``SnapTradeDeadlineExceededError``;
- a pause SnapTrade asked for stops the call before any check; a hold a check reports becomes one;
- a call is queued from its arrival and leaves the queue however it ends; it asks room for the
  calls queued ahead of it, and looks again shortly instead of sleeping on a count that was
  changing (a call ahead in flight, or served, while it counted);
- usage first records the pending feedback of its budgets without taking anything.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade.errors import SnapTradeBudgetExhaustedError, SnapTradeDeadlineExceededError
from aims_snaptrade.operations import get_operation
from aims_snaptrade.ratelimit._policy import (
    Claim,
    Outcome,
    Pause,
    PauseBook,
    Report,
    ReportBook,
    Take,
    WaitQueue,
)
from aims_snaptrade.ratelimit.limiter import Budget, RateLimitPolicy

BALANCE = get_operation("get_user_account_balance")  # customer and account budgets, both pause scopes
START = 1_800_000_000.0
MIN_PAUSE, SETTLE = 0.001, 0.003


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _policy(**kwargs: Any) -> RateLimitPolicy:
    return RateLimitPolicy(
        client_id="AIMS-ENGINE",
        budgets=(Budget("customer", "customer", 250, 60),),
        account_budget=Budget("account", "account", 10, 60),
        **kwargs,
    )


def _refused(waits: tuple[float | None, ...], now: float) -> Outcome:
    return Outcome(False, waits, (False,) * len(waits), (0,) * len(waits), now)


def _taken(n: int, stamp: float) -> Outcome:
    return Outcome(True, (None,) * n, (False,) * n, (0,) * n, stamp)


def drive(engine: Any, answer: Any, clock: Clock) -> tuple[list[Any], Any]:
    """Run ``engine``: ``answer(take)`` answers each check; a pause moves the clock. Returns the
    steps and the result (the stamp, or the error raised)."""
    steps: list[Any] = []
    reply: Any = None
    try:
        while True:
            step = engine.send(reply)
            steps.append(step)
            if isinstance(step, Pause):
                clock.now += step.seconds
                reply = None
            else:
                reply = answer(step)
    except StopIteration as stop:
        return steps, stop.value
    except (SnapTradeBudgetExhaustedError, SnapTradeDeadlineExceededError) as error:
        return steps, error


refusals = st.lists(
    st.tuples(st.one_of(st.none(), st.floats(0, 5)), st.one_of(st.none(), st.floats(0, 5))).filter(
        lambda waits: waits != (None, None)
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(
    refused=refusals,
    mode=st.sampled_from(["wait", "fail"]),
    max_wait=st.sampled_from([0.0, 0.5, 2.0, 6.0, 30.0]),
    deadline=st.sampled_from([None, -1.0, 0.0, 0.5, 2.0, 6.0, 40.0]),
)
def test_a_refused_call_waits_for_the_longest_wait_within_its_bound_or_is_refused_at_once(
    refused: list[tuple[float | None, float | None]], mode: str, max_wait: float, deadline: float | None
) -> None:
    policy = _policy()
    plan = policy.plan(BALANCE, user_id="u", account_id="acc-1")
    account = [k.budget.name for k in plan.keys].index("account")
    queue, clock = WaitQueue(), Clock()
    answers = iter(refused)

    def answer(take: Take) -> Outcome:
        assert take.now == clock.now and take.sliding is False
        assert [(c.key, c.amount, c.depth, c.report, c.moves) for c in take.claims] == [
            (c.key, 1, 0, None, ()) for c in plan.claims
        ]
        assert queue._taking == set(queue._waiting)  # its check is in flight
        waits = next(answers, None)
        if waits is None:
            return _taken(2, clock.now + 0.25)
        ordered = (waits[1], waits[0]) if account == 0 else waits  # (customer, account) in plan order
        return _refused(ordered, clock.now)

    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=PauseBook(),
        queue=queue,
        reports=ReportBook(),
        mode=mode,  # type: ignore[arg-type]
        max_wait=max_wait,
        deadline=deadline,
        clock=clock,
    )
    steps, result = drive(engine, answer, clock)
    assert not queue._waiting and not queue._taking and queue.departures() == 1  # it left

    by_deadline = deadline is not None and deadline < max_wait
    limit_at = START + (max(deadline, 0.0) if deadline is not None and by_deadline else max_wait)
    now, expected_steps = START, 0
    for waits in refused:
        expected_steps += 1  # the check
        customer, account_wait = waits
        longest = max((w, i) for i, w in enumerate((customer, account_wait)) if w is not None)
        wait = max(longest[0], MIN_PAUSE)
        scope = ("customer", "account")[longest[1]]
        if mode == "fail" or now + wait > limit_at:
            assert len(steps) == expected_steps
            assert isinstance(
                result,
                SnapTradeDeadlineExceededError if by_deadline and mode == "wait" else SnapTradeBudgetExhaustedError,
            )
            assert result.retry_after == round(wait, 3)
            assert result.limit_scope == scope
            assert ("'acc-1'" in result.message) is (scope == "account")
            waited = now - START
            assert (" after waiting " in result.message) is (waited >= 0.01)
            if waited >= 0.01:
                assert f" after waiting {waited:.2f} s" in result.message
            if isinstance(result, SnapTradeDeadlineExceededError):
                assert f"deadline ends in {max(limit_at - now, 0.0):.2f} s" in result.message
            return
        expected_steps += 1
        assert steps[expected_steps - 1] == Pause(wait)
        now += wait
    assert result == now + 0.25  # the stamp the check took the slots with
    assert len(steps) == expected_steps + 1 and isinstance(steps[-1], Take)


def test_a_pause_snaptrade_asked_for_stops_the_call_before_any_check() -> None:
    policy, clock, queue = _policy(), Clock(), WaitQueue()
    plan = policy.plan(BALANCE, user_id="u", account_id="acc-1")
    pauses = PauseBook()
    pauses.pause("account", "acc-1", START + 2.0)
    pauses.pause("customer", None, START + 1.0)
    pauses.pause("account", "acc-2", START + 9.0)  # another account's
    checks: list[Take] = []

    def answer(take: Take) -> Outcome:
        checks.append(take)
        return _taken(2, clock.now)

    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=pauses,
        queue=queue,
        reports=ReportBook(),
        mode="wait",
        max_wait=5.0,
        deadline=None,
        clock=clock,
    )
    steps, stamp = drive(engine, answer, clock)
    assert steps[0] == Pause(2.0)  # the longer of the two pauses of its scopes
    assert stamp == START + 2.0 and len(checks) == 1

    for mode, max_wait, deadline, kind in (
        ("fail", 5.0, None, SnapTradeBudgetExhaustedError),
        ("wait", 1.0, None, SnapTradeBudgetExhaustedError),
        ("wait", 5.0, 1.0, SnapTradeDeadlineExceededError),
    ):
        clock.now = START
        pauses.pause("account", "acc-1", START + 2.0)
        engine = policy.acquire_steps(
            BALANCE,
            plan,
            pauses=pauses,
            queue=queue,
            reports=ReportBook(),
            mode=mode,  # type: ignore[arg-type]
            max_wait=max_wait,
            deadline=deadline,
            clock=clock,
        )
        steps, error = drive(engine, answer, clock)
        assert steps == [] and isinstance(error, kind)
        assert (error.limit_scope, error.retry_after) == ("account", 2.0)
        assert error.message.startswith("Not sent: SnapTrade asked to pause the account rate limit")
        if kind is SnapTradeDeadlineExceededError:
            assert error.waiting_for == "rate-limit pause"
    assert len(checks) == 1 and not queue._waiting


def test_a_hold_a_check_reports_pauses_the_scope() -> None:
    """SnapTrade said the window is empty until its reset: the check holds the budget (no wait of
    its own) and the scope is paused until then, for this call and the next."""
    policy, clock, queue, pauses, reports = _policy(), Clock(), WaitQueue(), PauseBook(), ReportBook()
    plan = policy.plan(BALANCE, user_id="u", account_id="acc-1")
    names = {k.budget.name: k.storage_key for k in plan.keys}
    hold = Report(START - 1, 10, 2, hold_until=START + 3.0)
    reports.put(names["account"], hold)
    answers: list[Take] = []

    def answer(take: Take) -> Outcome:
        answers.append(take)
        if len(answers) == 1:
            held = tuple(c.report is not None for c in take.claims)
            return Outcome(False, tuple(0.0 if h else None for h in held), held, (0, 0), clock.now)
        return _taken(2, clock.now)

    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=pauses,
        queue=queue,
        reports=reports,
        mode="wait",
        max_wait=5.0,
        deadline=None,
        clock=clock,
    )
    steps, stamp = drive(engine, answer, clock)
    assert [c.report for c in answers[0].claims] == [hold if k.budget.name == "account" else None for k in plan.keys]
    assert steps[1] == Pause(3.0)
    assert pauses._until == {}  # over when the call went
    assert stamp == START + 3.0 and [c.report for c in answers[1].claims] == [None, None]
    assert reports.empty()

    reports.put(names["account"], hold)
    clock.now = START
    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=pauses,
        queue=queue,
        reports=reports,
        mode="fail",
        max_wait=5.0,
        deadline=None,
        clock=clock,
    )
    answers.clear()
    steps, error = drive(engine, answer, clock)
    assert isinstance(error, SnapTradeBudgetExhaustedError)
    assert (error.limit_scope, error.retry_after) == ("account", 3.0)
    assert error.message.startswith("Not sent: SnapTrade asked to pause the account rate limit")
    assert pauses.until("account", "acc-1", START) == START + 3.0
    assert pauses.until("customer", None, START) is None


def test_a_malformed_answer_does_not_spin() -> None:
    policy, clock, queue = _policy(), Clock(), WaitQueue()
    plan = policy.plan(BALANCE, user_id="u", account_id="acc-1")
    answers = iter([_refused((None, None), START), _taken(2, START + MIN_PAUSE)])
    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=PauseBook(),
        queue=queue,
        reports=ReportBook(),
        mode="wait",
        max_wait=1.0,
        deadline=None,
        clock=clock,
    )
    steps, _stamp = drive(engine, lambda take: next(answers), clock)
    assert steps[1] == Pause(MIN_PAUSE)
    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=PauseBook(),
        queue=queue,
        reports=ReportBook(),
        mode="fail",
        max_wait=1.0,
        deadline=None,
        clock=clock,
    )
    _, error = drive(engine, lambda take: _refused((None, None), clock.now), clock)
    assert (error.limit_scope, error.retry_after) == (plan.keys[0].budget.scope, MIN_PAUSE)


@settings(max_examples=100, deadline=None)
@given(
    ahead=st.lists(st.sampled_from(["same", "customer-only", "elsewhere"]), max_size=4),
    in_flight=st.lists(st.booleans(), min_size=4, max_size=4),
    served_meanwhile=st.booleans(),
    mode=st.sampled_from(["wait", "fail"]),
    wait=st.sampled_from([0.0005, 0.002, 0.5]),
    max_wait=st.sampled_from([0.002, 0.0035, 1.0]),
)
def test_a_call_asks_room_for_the_calls_ahead_and_looks_again_when_they_were_moving(
    ahead: list[str], in_flight: list[bool], served_meanwhile: bool, mode: str, wait: float, max_wait: float
) -> None:
    policy, clock, queue = _policy(), Clock(), WaitQueue()
    plan = policy.plan(BALANCE, user_id="u", account_id="acc-1")
    customer = next(k.storage_key for k in plan.keys if k.budget.name == "customer")
    other = policy.plan(BALANCE, user_id="u", account_id="acc-2").names
    key_sets = {"same": plan.names, "customer-only": (customer,), "elsewhere": ("elsewhere",)}
    tickets = [queue.arrive(key_sets[kind]) for kind in ahead]
    for ticket, busy in zip(tickets, in_flight, strict=False):
        queue.taking(ticket, busy)
    own = queue.arrive(plan.names)
    later = queue.arrive(other)  # arrived after it: never counted
    checks: list[Take] = []

    def answer(take: Take) -> Outcome:
        checks.append(take)
        if len(checks) > 1:
            return _taken(2, clock.now)
        if served_meanwhile and tickets:
            queue.leave(tickets[0])
        return _refused(tuple(wait for _ in take.claims), clock.now)

    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=PauseBook(),
        queue=queue,
        reports=ReportBook(),
        mode=mode,  # type: ignore[arg-type]
        max_wait=max_wait,
        deadline=None,
        clock=clock,
        ticket=own,
    )
    steps, result = drive(engine, answer, clock)
    depth = {name: sum(name in key_sets[kind] for kind in ahead) for name in plan.names}
    assert [c.depth for c in checks[0].claims] == [depth[name] for name in plan.names]
    assert [c.amount for c in checks[0].claims] == [1, 1]
    counted = [t for t, kind in zip(tickets, ahead, strict=True) if kind != "elsewhere"]
    moving = any(busy for t, busy in zip(tickets, in_flight, strict=False) if t in counted) or (
        served_meanwhile and bool(tickets)
    )
    full = max(wait, MIN_PAUSE)
    if mode == "wait" and moving and START + max_wait >= START + SETTLE:
        assert steps[1] == Pause(min(full, SETTLE))
        assert result == START + min(full, SETTLE)
    elif mode == "fail" or full > max_wait:
        assert isinstance(result, SnapTradeBudgetExhaustedError) and len(checks) == 1
    else:
        assert steps[1] == Pause(full)
    assert later in queue._waiting and len(queue._waiting) == 1 + len(tickets) - (served_meanwhile and bool(tickets))


def test_a_call_queued_already_keeps_its_ticket_and_an_abandoned_call_leaves() -> None:
    policy, clock, queue = _policy(), Clock(), WaitQueue()
    plan = policy.plan(BALANCE, user_id="u", account_id="acc-1")
    first = queue.arrive(("elsewhere",))
    ticket = queue.arrive(plan.names)
    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=PauseBook(),
        queue=queue,
        reports=ReportBook(),
        mode="wait",
        max_wait=5.0,
        deadline=None,
        clock=clock,
        start=START - 1.0,
        ticket=ticket,
    )
    take = engine.send(None)
    assert isinstance(take, Take) and queue._waiting == {first: ("elsewhere",), ticket: plan.names}
    assert engine.send(_refused((3.5, None), clock.now)) == Pause(3.5)  # ends 4.5 s after its start
    engine.close()  # abandoned (cancelled) while it waits
    assert queue._waiting == {first: ("elsewhere",)}
    ticket = queue.arrive(plan.names)
    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=PauseBook(),
        queue=queue,
        reports=ReportBook(),
        mode="wait",
        max_wait=5.0,
        deadline=None,
        clock=clock,
        start=START - 1.0,
        ticket=ticket,
    )
    _steps, error = drive(engine, lambda take: _refused((None, 4.5), clock.now), clock)
    assert isinstance(error, SnapTradeBudgetExhaustedError)  # it would end 5.5 s after its start
    assert "after waiting 1.00 s; the next slot frees in 4.50 s" in error.message
    assert queue._waiting == {first: ("elsewhere",)}


def test_usage_records_pending_feedback_without_taking() -> None:
    policy, clock, reports = _policy(), Clock(), ReportBook()
    keys = policy.plan(BALANCE, user_id="u", account_id="acc-1").keys
    assert list(drive(policy.flush_steps(keys, reports=reports, clock=clock), None, clock)[0]) == []
    report = Report(START - 2, 7, 2)
    reports.put(keys[1].storage_key, report)
    reports.move(keys[0].storage_key, START - 1, START)
    seen: list[Take] = []
    _, now = drive(
        policy.flush_steps(keys, reports=reports, clock=clock), lambda t: seen.append(t) or _taken(2, START), clock
    )
    assert now == START
    [take] = seen
    assert take.now == START and take.sliding is False
    expected = [
        Claim(keys[0], policy.margin_for(keys[0].budget), 0, 0, None, ((START - 1, START),)),
        Claim(keys[1], policy.margin_for(keys[1].budget), 0, 0, report, ()),
    ]
    assert list(take.claims) == expected
    assert reports.empty()


def test_a_report_the_check_did_not_hold_pauses_nothing() -> None:
    """SnapTrade's 'Remaining: 0' is a hold only when the check found it beyond our own count."""
    policy, clock, queue, pauses, reports = _policy(), Clock(), WaitQueue(), PauseBook(), ReportBook()
    plan = policy.plan(BALANCE, user_id="u", account_id="acc-1")
    account = next(k.storage_key for k in plan.keys if k.budget.name == "account")
    reports.put(account, Report(START - 1, 10, 2, hold_until=START + 30.0))
    answers = iter([_refused((0.5, 0.5), START), _taken(2, START + 0.5)])
    engine = policy.acquire_steps(
        BALANCE,
        plan,
        pauses=pauses,
        queue=queue,
        reports=reports,
        mode="wait",
        max_wait=5.0,
        deadline=None,
        clock=clock,
    )
    steps, stamp = drive(engine, lambda take: next(answers), clock)
    assert steps[1] == Pause(0.5) and stamp == START + 0.5
    assert pauses._until == {}
