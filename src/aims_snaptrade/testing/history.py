"""Seeded account value histories and the rates of return derived from them.

SnapTrade estimates an account's past total value (``balanceHistory``, one year at most) and reports
rates of return per timeframe (``returnRates``). The emulator derives both from one deterministic
random walk per account that ends at the account's current total value, so the two endpoints agree
with each other and with the balances: a test can recompute any rate from the history.

The walk depends only on the emulator's seed and the account id (itself deterministic for a seed);
day ``k`` of it is the value ``k`` days before "today" (UTC), so answers are stable within a day
and shift with the calendar, as SnapTrade's do. Cash flows are ignored: a rate is the change of
total value over the timeframe. Accounts whose total value is not positive (a drawn line of
credit) get a flat history and 0 % returns, since a ratio of such values means nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

__all__ = [
    "BALANCE_HISTORY_DAYS",
    "TIMEFRAMES",
    "ValueWalk",
    "combined_rates",
    "parse_timeframes",
]

TIMEFRAMES: tuple[str, ...] = ("ALL", "1Y", "YTD", "1M", "1W", "1D")
"""Rate-of-return timeframes SnapTrade supports, in the order it lists them."""

BALANCE_HISTORY_DAYS = 365
"""Lookback of ``balanceHistory`` (SnapTrade: at most one year)."""

_CENT = Decimal("0.01")
# Daily return of the walk: about +8 % a year with a 14 % yearly volatility, like a broad index.
_DRIFT = 0.0003
_VOLATILITY = 0.009


def parse_timeframes(raw: str | None) -> tuple[str, ...]:
    """The timeframes asked for by a ``timeframes`` query value (all six when absent), in canonical order.

    Raises:
        ValueError: An unsupported timeframe (the message names it).
    """
    if raw is None or not raw.strip():
        return TIMEFRAMES
    wanted = {part.strip().upper() for part in raw.split(",") if part.strip()}
    unknown = sorted(wanted - set(TIMEFRAMES))
    if unknown:
        raise ValueError(f"unsupported timeframes {', '.join(unknown)}: use {', '.join(TIMEFRAMES)}")
    return tuple(t for t in TIMEFRAMES if t in wanted)


def _timeframe_start(timeframe: str, today: date, opened: date) -> date:
    starts = {
        "1D": today - timedelta(days=1),
        "1W": today - timedelta(days=7),
        "1M": today - timedelta(days=30),
        "YTD": date(today.year, 1, 1),
        "1Y": today - timedelta(days=365),
        "ALL": opened,
    }
    # No timeframe reaches back before the account existed.
    return max(starts[timeframe], opened)


@dataclass(frozen=True, slots=True)
class ValueWalk:
    """One account's estimated total value over time.

    Attributes:
        values: Index ``k`` is the value ``k`` days before ``today``, in cents; index 0 is the
            current total value.
        today: The day the walk ends on.
        opened: The account's opening day (the walk starts there).
    """

    values: tuple[Decimal, ...]
    today: date
    opened: date

    @classmethod
    def build(cls, seed: int, account_id: str, current: Decimal, opened: date, today: date) -> ValueWalk:
        """The walk of one account, ending at ``current`` on ``today``."""
        opened = min(opened, today)
        days = (today - opened).days
        end = current.quantize(_CENT, rounding=ROUND_HALF_UP)
        if end <= 0:
            return cls((end,) * (days + 1), today, opened)
        rng = random.Random(f"{seed}:value-walk:{account_id}")
        values = [end]
        value = float(end)
        for _ in range(days):
            # Walk backwards: yesterday's value is today's divided by today's growth.
            value /= 1.0 + max(-0.5, rng.gauss(_DRIFT, _VOLATILITY))
            values.append(Decimal(f"{value:.2f}"))
        return cls(tuple(values), today, opened)

    @property
    def current(self) -> Decimal:
        """The value on ``today``."""
        return self.values[0]

    def history(self, days: int = BALANCE_HISTORY_DAYS) -> list[tuple[date, Decimal]]:
        """(day, value) for the last ``days`` days and today, oldest first (never before opening)."""
        span = min(days, len(self.values) - 1)
        return [(self.today - timedelta(days=k), self.values[k]) for k in range(span, -1, -1)]

    def rate(self, timeframe: str) -> Decimal:
        """Percent change of total value over ``timeframe`` (``5.97`` is +5.97 %), two decimals."""
        back = (self.today - _timeframe_start(timeframe, self.today, self.opened)).days
        start = self.values[min(back, len(self.values) - 1)]
        if start <= 0 or self.current <= 0:
            return Decimal("0.00")
        return ((self.current / start - 1) * 100).quantize(_CENT, rounding=ROUND_HALF_UP)

    def rates(self, timeframes: Sequence[str] = TIMEFRAMES) -> list[tuple[str, Decimal]]:
        """``(timeframe, percent)`` for each of ``timeframes``."""
        return [(t, self.rate(t)) for t in timeframes]


def combined_rates(walks: Iterable[ValueWalk], timeframes: Sequence[str] = TIMEFRAMES) -> list[tuple[str, Decimal]]:
    """Rates of several accounts together (a connection): each timeframe's account rates averaged,
    weighted by the accounts' current values. Accounts of no positive value weigh nothing."""
    weighted = [(w, w.current) for w in walks if w.current > 0]
    total = sum((weight for _, weight in weighted), Decimal(0))
    out: list[tuple[str, Decimal]] = []
    for timeframe in timeframes:
        if total <= 0:
            out.append((timeframe, Decimal("0.00")))
            continue
        mean = sum((w.rate(timeframe) * weight for w, weight in weighted), Decimal(0)) / total
        out.append((timeframe, mean.quantize(_CENT, rounding=ROUND_HALF_UP)))
    return out
