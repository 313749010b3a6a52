"""Rate limiting: budgets on ``limits``, shared across replicas through Redis.

- :mod:`~aims_snaptrade.ratelimit.limiter`: the blocking and asyncio limiters (the public face);
- ``_policy``: the sans-IO decisions (budgets, plans, pauses, feedback from SnapTrade's headers);
- ``_take``: taking slots (the memory path and the Redis script's callers);
- ``_lua``: the Redis script that checks and takes every budget of a call atomically.
"""

from __future__ import annotations

# The limiters' public names are this package's: one list, kept in limiter.__all__.
from aims_snaptrade.ratelimit.limiter import *  # noqa: F403
from aims_snaptrade.ratelimit.limiter import __all__ as __all__
