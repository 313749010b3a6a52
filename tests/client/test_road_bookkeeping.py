"""The road settles every call with the retry budget exactly as tenacity's own bookkeeping would.

A call whose first attempt succeeds never builds tenacity's objects (the common case costs
nothing); these tests pin that its counts and refunds are still those of the retry policy.
"""

from __future__ import annotations

import pytest

from aims_snaptrade import RetryPolicy
from aims_snaptrade.retry import RetryBudget
from aims_snaptrade.testing import Fault


def _policy() -> RetryPolicy:
    budget = RetryBudget(capacity=20, retry_cost=5, success_refill=1)
    return RetryPolicy(max_attempts=3, deadline=None, initial_delay=0.01, max_delay=0.01, budget=budget)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_first_time_successes_and_retries_are_counted_and_refunded(
    flavour, make_client, make_async_client, emu, alice
):
    policy = _policy()
    budget = policy.budget
    assert budget is not None
    budget.withdraw(None)
    budget.withdraw(None)  # 10 of 20 tokens left: every success must refill it
    emu.faults.add(Fault.status(500), operation="list_all_user_accounts", times=1)

    async def calls() -> None:
        if flavour == "sync":
            client = make_client(retry=policy)
            for _ in range(4):
                client.list_accounts(alice.user_id)
        else:
            async with make_async_client(retry=policy) as client:
                for _ in range(4):
                    await client.list_accounts(alice.user_id)

    await calls()
    # First call: 500, one retry (5 tokens paid, refunded by its success); then three plain successes.
    assert policy.stats.snapshot() == {"attempts": 5, "retries": 1, "successes": 4, "budget_refusals": 0}
    assert budget.available == 10 + 3 * budget.success_refill
