"""Property: over any arrival pattern, no budget is ever exceeded, the safety margin included.

Random arrivals on a simulated clock (gaps, accounts, fail or wait mode with random ``max_wait``,
SnapTrade's feedback with random ``Remaining`` headers and slow answers) drive one limiter with
five budgets. Afterwards, for every budget, no ``limit + 1`` slots were ever taken within
``window + margin`` seconds, and ``limits``' own window statistics read what the check wrote.
``AIMS_TRAFFIC_EXAMPLES`` sets the number of examples (``nox -s traffic`` runs 1,000).
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from traffic_helpers import FakeClock, policy_for

from aims_snaptrade.errors import SnapTradeBudgetExhaustedError
from aims_snaptrade.operations import get_operation
from aims_snaptrade.ratelimit.limiter import Budget, RateLimiter

EXAMPLES = int(os.environ.get("AIMS_TRAFFIC_EXAMPLES", "40"))
BALANCE = get_operation("get_user_account_balance")  # signed, account- and user-scoped
CHECK = get_operation("check")  # unsigned: plan budgets only

arrival = st.fixed_dictionaries(
    {
        "gap": st.one_of(st.just(0.0), st.floats(min_value=0, max_value=4, allow_nan=False)),
        "op": st.sampled_from([BALANCE, BALANCE, BALANCE, CHECK]),
        "account": st.sampled_from(["acc-1", "acc-2", "acc-3"]),
        "user": st.sampled_from(["u1", "u2"]),
        "max_wait": st.one_of(st.none(), st.floats(min_value=0, max_value=15, allow_nan=False)),
        "remaining": st.one_of(st.none(), st.none(), st.integers(min_value=0, max_value=8)),
        "answer_after": st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1, allow_nan=False)),
    }
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrivals=st.lists(arrival, min_size=1, max_size=80))
def test_no_budget_is_ever_exceeded(arrivals: list[dict[str, Any]], clock: FakeClock, storage_url: str) -> None:
    policy = policy_for(
        f"prop-{uuid.uuid4().hex[:12]}",
        Budget("plan-minute", "plan", 9, 20),
        Budget("customer", "customer", 6, 10),
        account_budget=Budget("account", "account", 3, 10),
        user_budget=Budget("user", "user", 5, 15),
        safety_margin=0.5,
    )
    lim = RateLimiter(policy, storage_url, clock=clock.time, sleep=clock.sleep)
    taken: dict[str, list[float]] = defaultdict(list)
    keys_by_name: dict[str, Any] = {}
    for a in arrivals:
        clock.advance(a["gap"])
        mode = "fail" if a["max_wait"] is None else "wait"
        try:
            stamp = lim.acquire(a["op"], user_id=a["user"], account_id=a["account"], mode=mode, max_wait=a["max_wait"])
        except SnapTradeBudgetExhaustedError:
            continue
        for key in policy.keys_for(a["op"], user_id=a["user"], account_id=a["account"]):
            taken[key.storage_key].append(stamp)
            keys_by_name[key.storage_key] = key
        clock.advance(a["answer_after"])
        headers = {} if a["remaining"] is None else {"X-RateLimit-Remaining": str(a["remaining"])}
        lim.observe(a["op"], account_id=a["account"], status=200, headers=headers, sent_at=stamp, user_id=a["user"])
    for name, stamps in taken.items():
        budget = keys_by_name[name].budget
        span = budget.window + policy.margin_for(budget)
        stamps.sort()
        for first, later in zip(stamps, stamps[budget.limit :], strict=False):
            assert later - first > span, f"{budget.name}: {budget.limit + 1} slots within {later - first:.3f} s"
    # limits reads what the check wrote: never more than the limit in a window.
    reader = MovingWindowRateLimiter(lim._storage if storage_url == "memory://" else storage_from_string(storage_url))
    for key in keys_by_name.values():
        assert 0 <= reader.get_window_stats(key.budget.item, *key.identifiers).remaining <= key.budget.limit
    lim.close()


def test_property_example_count_is_reported() -> None:
    print(f"no-budget-exceeded property: {EXAMPLES} examples per storage")
    assert EXAMPLES >= 1
