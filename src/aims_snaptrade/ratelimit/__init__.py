"""Rate limiting: budgets on ``limits``, shared across replicas through Redis.

- :mod:`~aims_snaptrade.ratelimit.limiter`: the blocking and asyncio limiters (the public face);
- ``_policy``: the sans-IO decisions (budgets, plans, pauses, feedback from SnapTrade's headers);
- ``_take``: taking slots (the memory path and the Redis script's callers);
- ``_lua``: the Redis script that checks and takes every budget of a call atomically.
"""

from __future__ import annotations

from aims_snaptrade.ratelimit.limiter import (
    ALERT_FRACTION,
    NAMESPACE,
    PLAN_PRESETS,
    AsyncRateLimiter,
    Budget,
    BudgetKey,
    BudgetUsage,
    RateLimiter,
    RateLimitPolicy,
    Scope,
    parse_retry_after,
)

__all__ = [
    "ALERT_FRACTION",
    "NAMESPACE",
    "PLAN_PRESETS",
    "AsyncRateLimiter",
    "Budget",
    "BudgetKey",
    "BudgetUsage",
    "RateLimitPolicy",
    "RateLimiter",
    "Scope",
    "parse_retry_after",
]
