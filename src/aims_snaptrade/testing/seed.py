"""Seeded, deterministic portfolios modelled on SnapTrade's Sandbox brokerage scenarios.

The Sandbox brokerage offers these scenarios when a user connects (SnapTrade docs, "Sandbox"):

* ``self_directed`` (default): two funded accounts with positions, orders and transactions.
  Here: an individual margin account (4 positions, 5 orders in every status family, 1,200
  transactions so that activities span two pages at SnapTrade's 1,000-per-page maximum:
  trades, cash & fees, dividends, splits) and a Roth IRA (4 positions, 2 orders, 150 transactions:
  transfers, contributions, withdrawals, taxes).
* ``cash_only``: one cash account, no holdings (a few cash transactions, no orders).
* ``no_transactions``: the self-directed accounts with positions and orders but no activity history.
* ``no_accounts``: the connection succeeds with zero accounts.
* ``invalid_credentials``, ``account_locked``, ``rate_limited``: the connection fails in the portal;
  no connection is created (:class:`ConnectionPortalError`).

One emulator-only scenario, ``all_account_kinds``, yields one account of each ``kind`` of
``/accounts/all`` (investment, deposit, line_of_credit, annuity), which the Sandbox cannot.

Values depend only on the scenario and the emulator's seed; ids and account numbers also depend on
the order in which things were created, so the same calls on the same seed give the same data.
Historical dates are anchored on a fixed day (:data:`HISTORY_ANCHOR`); recent orders are placed
relative to the connection time so that "recent orders" (last 24 hours) has content.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from aims_snaptrade.testing.records import (
    Account,
    Activity,
    Authorization,
    Brokerage,
    Currency,
    Exchange,
    Order,
    Position,
    Security,
)

__all__ = [
    "BROKERAGES",
    "CRYPTO_PAIRS",
    "CURRENCIES",
    "EXCHANGES",
    "HISTORY_ANCHOR",
    "SECURITIES",
    "ConnectionPortalError",
    "Scenario",
    "brokerage_for",
    "build_accounts",
    "ref_id",
    "security_by_id",
]

_NS = uuid.UUID("6f1c1b5e-6a43-4a0e-9d7e-5e3a1f0c2b77")


def ref_id(kind: str, key: str) -> str:
    """Stable UUID for reference data (the same in every emulator and every run)."""
    return str(uuid.uuid5(_NS, f"{kind}:{key}"))


class Scenario(enum.StrEnum):
    """What a completed portal connection yields; see the module documentation."""

    SELF_DIRECTED = "self_directed"
    CASH_ONLY = "cash_only"
    NO_TRANSACTIONS = "no_transactions"
    NO_ACCOUNTS = "no_accounts"
    INVALID_CREDENTIALS = "invalid_credentials"
    ACCOUNT_LOCKED = "account_locked"
    RATE_LIMITED = "rate_limited"
    ALL_ACCOUNT_KINDS = "all_account_kinds"

    @classmethod
    def _missing_(cls, value: object) -> Scenario | None:
        # Accept the portal's labels too: "Self-directed", "cash only", "NO_ACCOUNTS"...
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_").replace(" ", "_")
            for member in cls:
                if member.value == key:
                    return member
        return None

    @property
    def fails(self) -> bool:
        """True for the scenarios whose connection attempt fails."""
        return self in _FAILING


_FAILING: dict[Scenario, str] = {
    Scenario.INVALID_CREDENTIALS: "The brokerage rejected the credentials provided.",
    Scenario.ACCOUNT_LOCKED: "The brokerage account is locked. Contact the brokerage to unlock it.",
    Scenario.RATE_LIMITED: "The brokerage is rate limiting connection attempts. Try again later.",
}


class ConnectionPortalError(Exception):
    """A portal connection attempt failed (the failing Sandbox scenarios, expired links...).

    Attributes:
        reason: Machine-readable reason: a failing scenario's value, ``"session_expired"``,
            ``"session_used"``, ``"unknown_session"``.
        detail: What the portal would tell the user.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    @classmethod
    def for_scenario(cls, scenario: Scenario) -> ConnectionPortalError:
        """The error a failing scenario produces."""
        return cls(scenario.value, _FAILING[scenario])


# --- reference data -----------------------------------------------------------------------------

USD = Currency(ref_id("currency", "USD"), "USD", "US Dollar")
CAD = Currency(ref_id("currency", "CAD"), "CAD", "Canadian Dollar")
CURRENCIES: dict[str, Currency] = {c.code: c for c in (USD, CAD)}
"""Currencies by code."""

_NASDAQ = Exchange(ref_id("exchange", "XNAS"), "NASDAQ", "XNAS", "Nasdaq All Markets")
_NYSE = Exchange(ref_id("exchange", "XNYS"), "NYSE", "XNYS", "New York Stock Exchange")
_ARCA = Exchange(ref_id("exchange", "ARCX"), "ARCA", "ARCX", "NYSE Arca")
# No seeded security trades on the TSX; it is listed so that /exchanges shows a suffix and a
# non-US timezone, as SnapTrade's list does.
_TSX = Exchange(ref_id("exchange", "XTSE"), "TSX", "XTSE", "Toronto Stock Exchange", "America/Toronto", suffix=".TO")
EXCHANGES: dict[str, Exchange] = {e.mic_code: e for e in (_NASDAQ, _NYSE, _ARCA, _TSX)}
"""Exchanges (``/exchanges``), by MIC code."""


def _security(ticker: str, name: str, kind: str, price: str, exchange: Exchange, figi: str | None) -> Security:
    return Security(ref_id("security", ticker), ticker, name, kind, Decimal(price), exchange, USD, figi)


SECURITIES: dict[str, Security] = {
    s.ticker: s
    for s in (
        _security("AAPL", "Apple Inc.", "stock", "228.50", _NASDAQ, "BBG000B9XRY4"),
        _security("MSFT", "Microsoft Corporation", "stock", "415.20", _NASDAQ, "BBG000BPH459"),
        _security("GOOGL", "Alphabet Inc. Class A", "stock", "171.35", _NASDAQ, "BBG009S39JX6"),
        _security("TSLA", "Tesla, Inc.", "stock", "242.10", _NASDAQ, "BBG000N9MNX3"),
        _security("JNJ", "Johnson & Johnson", "stock", "158.40", _NYSE, "BBG000BMHYD1"),
        _security("KO", "The Coca-Cola Company", "stock", "63.75", _NYSE, "BBG000BMX289"),
        _security("VTI", "Vanguard Total Stock Market ETF", "etf", "281.40", _ARCA, None),
        _security("SPY", "SPDR S&P 500 ETF Trust", "etf", "560.75", _ARCA, "BBG000BDTBL9"),
        _security("BND", "Vanguard Total Bond Market ETF", "etf", "72.90", _NASDAQ, None),
    )
}
"""Securities the emulator can quote and trade, by ticker."""

_SECURITIES_BY_ID = {s.id: s for s in SECURITIES.values()}


def security_by_id(security_id: str) -> Security | None:
    """The security with this universal symbol id, if known."""
    return _SECURITIES_BY_ID.get(security_id)


def _brokerage(
    slug: str,
    name: str,
    trading: bool,
    paper: bool = False,
    auth_type: str = "OAUTH",
    regions: tuple[str, ...] = ("US",),
) -> Brokerage:
    return Brokerage(ref_id("brokerage", slug), slug, name, trading, True, paper, auth_type, regions)


BROKERAGES: dict[str, Brokerage] = {
    b.slug: b
    for b in (
        _brokerage("SANDBOX", "Sandbox", trading=False, auth_type="TOKEN"),
        _brokerage("ALPACA", "Alpaca", trading=True),
        _brokerage("ALPACA-PAPER", "Alpaca Paper", trading=True, paper=True),
        _brokerage("QUESTRADE", "Questrade", trading=False, regions=("CA",)),
        _brokerage("ROBINHOOD", "Robinhood", trading=False, auth_type="UNOFFICIAL_API"),
        _brokerage("SCHWAB", "Charles Schwab", trading=True),
        _brokerage("ETRADE", "E*TRADE", trading=True),
        _brokerage("INTERACTIVE-BROKERS", "Interactive Brokers", trading=False, regions=("US", "CA", "EUROPE")),
        _brokerage("WEALTHSIMPLETRADE", "Wealthsimple", trading=True, auth_type="UNOFFICIAL_API", regions=("CA",)),
    )
}
"""Brokerages with their real names and whether SnapTrade trades there, by slug."""


def brokerage_for(slug: str) -> Brokerage:
    """The known brokerage for ``slug`` (case-insensitive), or a trading-capable stand-in."""
    key = slug.strip().upper()
    found = BROKERAGES.get(key)
    if found is not None:
        return found
    return _brokerage(key, key.replace("-", " ").title(), trading=True)


# --- portfolios ---------------------------------------------------------------------------------

HISTORY_ANCHOR = datetime(2026, 6, 30, 20, 0, tzinfo=UTC)
"""Newest transaction date of every seeded history; older ones step back a business day each."""

_CENT = Decimal("0.01")


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class _OrderSeed:
    ticker: str
    action: str
    order_type: str
    time_in_force: str
    status: str
    quantity: str
    filled: str
    limit: str | None
    execution: str | None
    hours_ago: float


@dataclass(frozen=True, slots=True)
class _AccountSeed:
    name: str
    raw_type: str
    kind: str
    cash_or_margin: str
    cash: str
    buying_power: str
    positions: tuple[tuple[str, str, str], ...]  # ticker, units, average cost
    orders: tuple[_OrderSeed, ...]
    history: int
    history_mix: tuple[tuple[str, int], ...]  # activity type, weight
    credit_limit: str | None = None


_TRADING_MIX = (
    ("BUY", 34),
    ("SELL", 12),
    ("DIVIDEND", 16),
    ("REI", 5),
    ("CONTRIBUTION", 9),
    ("INTEREST", 6),
    ("FEE", 6),
    ("TAX", 3),
    ("SUBSTITUTE_DIVIDEND", 2),
    ("STOCK_DIVIDEND", 2),
    ("SPLIT", 1),
    ("ADJUSTMENT", 1),
)
_TRANSFER_MIX = (
    ("CONTRIBUTION", 14),
    ("TRANSFER", 8),
    ("EXTERNAL_ASSET_TRANSFER_IN", 4),
    ("EXTERNAL_ASSET_TRANSFER_OUT", 2),
    ("WITHDRAWAL", 5),
    ("BUY", 20),
    ("SELL", 6),
    ("DIVIDEND", 10),
    ("TAX", 3),
    ("FEE", 2),
)
_CASH_MIX = (("CONTRIBUTION", 3), ("WITHDRAWAL", 1), ("INTEREST", 2))

_INDIVIDUAL = _AccountSeed(
    name="Individual Brokerage",
    raw_type="Margin",
    kind="investment",
    cash_or_margin="margin",
    cash="12500.00",
    buying_power="25000.00",
    positions=(
        ("AAPL", "30", "150.25"),
        ("MSFT", "12", "300.10"),
        ("VTI", "45.5", "210.00"),
        ("TSLA", "8", "260.00"),
    ),
    orders=(
        _OrderSeed("AAPL", "BUY", "Market", "Day", "EXECUTED", "10", "10", None, "226.10", 2),
        _OrderSeed("MSFT", "BUY", "Limit", "GTC", "PARTIAL", "10", "4", "410.00", "409.80", 3),
        _OrderSeed("VTI", "BUY", "Limit", "GTC", "ACCEPTED", "5", "0", "250.00", None, 5),
        _OrderSeed("TSLA", "SELL", "Limit", "Day", "CANCELED", "3", "0", "300.00", None, 30),
        _OrderSeed("GOOGL", "BUY", "Market", "Day", "REJECTED", "1000", "0", None, None, 50),
    ),
    history=1200,
    history_mix=_TRADING_MIX,
)
_ROTH = _AccountSeed(
    name="Roth IRA",
    raw_type="Roth IRA",
    kind="investment",
    cash_or_margin="cash",
    cash="3210.55",
    buying_power="3210.55",
    positions=(
        ("SPY", "20", "420.00"),
        ("JNJ", "15", "155.00"),
        ("KO", "40", "58.00"),
        ("GOOGL", "10", "120.00"),
    ),
    orders=(
        _OrderSeed("SPY", "BUY", "Market", "Day", "EXECUTED", "2", "2", None, "558.20", 20),
        _OrderSeed("KO", "SELL", "Limit", "Day", "EXECUTED", "5", "5", "63.00", "63.10", 240),
    ),
    history=150,
    history_mix=_TRANSFER_MIX,
)
_CASH = _AccountSeed(
    name="Cash Account",
    raw_type="Cash",
    kind="investment",
    cash_or_margin="cash",
    cash="10000.00",
    buying_power="10000.00",
    positions=(),
    orders=(),
    history=5,
    history_mix=_CASH_MIX,
)
_CHECKING = _AccountSeed(
    name="Everyday Checking",
    raw_type="Checking",
    kind="deposit",
    cash_or_margin="unknown",
    cash="4200.00",
    buying_power="4200.00",
    positions=(),
    orders=(),
    history=24,
    history_mix=_CASH_MIX,
)
_CREDIT_LINE = _AccountSeed(
    name="Personal Line of Credit",
    raw_type="Line of Credit",
    kind="line_of_credit",
    cash_or_margin="unknown",
    cash="-1250.00",
    buying_power="8750.00",
    positions=(),
    orders=(),
    history=0,
    history_mix=_CASH_MIX,
    credit_limit="10000.00",
)
_ANNUITY = _AccountSeed(
    name="Fixed Annuity",
    raw_type="Annuity",
    kind="annuity",
    cash_or_margin="unknown",
    cash="55000.00",
    buying_power="0.00",
    positions=(),
    orders=(),
    history=0,
    history_mix=_CASH_MIX,
)

_SCENARIO_ACCOUNTS: dict[Scenario, tuple[_AccountSeed, ...]] = {
    Scenario.SELF_DIRECTED: (_INDIVIDUAL, _ROTH),
    Scenario.CASH_ONLY: (_CASH,),
    Scenario.NO_TRANSACTIONS: (_INDIVIDUAL, _ROTH),
    Scenario.NO_ACCOUNTS: (),
    Scenario.ALL_ACCOUNT_KINDS: (
        _AccountSeed(
            "Individual Brokerage",
            "Margin",
            "investment",
            "margin",
            "12500.00",
            "25000.00",
            _INDIVIDUAL.positions,
            _INDIVIDUAL.orders,
            50,
            _TRADING_MIX,
        ),
        _CHECKING,
        _CREDIT_LINE,
        _ANNUITY,
    ),
}


def build_accounts(
    scenario: Scenario,
    *,
    seed: int,
    authorization: Authorization,
    now: datetime,
    new_id: Callable[[str], str],
) -> list[Account]:
    """Create the accounts a successful connection in ``scenario`` yields.

    Raises:
        ConnectionPortalError: For the failing scenarios.
    """
    if scenario.fails:
        raise ConnectionPortalError.for_scenario(scenario)
    accounts: list[Account] = []
    for ordinal, spec in enumerate(_SCENARIO_ACCOUNTS[scenario]):
        numbers = random.Random(f"{seed}:{authorization.id}:{ordinal}")
        account = Account(
            id=new_id("account"),
            authorization_id=authorization.id,
            client_id=authorization.client_id,
            user_id=authorization.user_id,
            name=spec.name,
            number=str(numbers.randrange(10_000_000, 99_999_999)),
            institution_name=authorization.brokerage.name,
            kind=spec.kind,
            raw_type=spec.raw_type,
            cash_or_margin=spec.cash_or_margin,
            currency=USD,
            cash=Decimal(spec.cash),
            buying_power=Decimal(spec.buying_power),
            created_at=now,
            opening_date=datetime(2019, 3, 1, tzinfo=UTC) + timedelta(days=97 * ordinal),
            is_paper=authorization.brokerage.is_paper,
            credit_limit=Decimal(spec.credit_limit) if spec.credit_limit else None,
        )
        for ticker, units, cost in spec.positions:
            account.positions[ticker] = Position(SECURITIES[ticker], Decimal(units), Decimal(cost))
        account.orders = [_order(o, account.id, now, new_id) for o in spec.orders]
        if scenario is not Scenario.NO_TRANSACTIONS and spec.history:
            history = random.Random(f"{seed}:{scenario.value}:{ordinal}")
            held = [SECURITIES[t] for t, _, _ in spec.positions] or list(SECURITIES.values())[:3]
            account.activities = _history(history, spec, held, authorization.brokerage.name, new_id)
        accounts.append(account)
    return accounts


def _order(seed: _OrderSeed, account_id: str, now: datetime, new_id: Callable[[str], str]) -> Order:
    placed = now - timedelta(hours=seed.hours_ago)
    quantity, filled = Decimal(seed.quantity), Decimal(seed.filled)
    executed = placed + timedelta(minutes=1) if filled > 0 else None
    return Order(
        brokerage_order_id=new_id("order"),
        account_id=account_id,
        security=SECURITIES[seed.ticker],
        action=seed.action,
        order_type=seed.order_type,
        time_in_force=seed.time_in_force,
        status=seed.status,
        total_quantity=quantity,
        filled_quantity=filled,
        canceled_quantity=quantity - filled if seed.status == "CANCELED" else Decimal(0),
        limit_price=Decimal(seed.limit) if seed.limit else None,
        stop_price=None,
        execution_price=Decimal(seed.execution) if seed.execution else None,
        time_placed=placed,
        time_updated=executed or placed,
        time_executed=executed,
    )


def _history(
    rng: random.Random,
    spec: _AccountSeed,
    held: Sequence[Security],
    institution: str,
    new_id: Callable[[str], str],
) -> list[Activity]:
    """``spec.history`` transactions, newest first, one per business day back from the anchor."""
    types = [t for t, _ in spec.history_mix]
    weights = [w for _, w in spec.history_mix]
    out: list[Activity] = []
    day = HISTORY_ANCHOR
    for _ in range(spec.history):
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        kind = rng.choices(types, weights)[0]
        security: Security | None = rng.choice(held)
        assert security is not None
        base = security.price
        units = Decimal(0)
        price = Decimal(0)
        fee = Decimal(0)
        if kind in ("BUY", "SELL", "REI"):
            units = Decimal(rng.randint(1, 20)) if kind != "REI" else Decimal("0.25") * rng.randint(1, 8)
            price = _money(base * Decimal(rng.randint(60, 110)) / 100)
            fee = Decimal("4.95") if kind != "REI" and rng.random() < 0.2 else Decimal(0)
            amount = _money(units * price)
            if kind == "SELL":
                units, amount = -units, amount - fee
            else:
                amount = -(amount + fee)
            description = f"{kind} {abs(units)} {security.ticker} @ {price}"
        elif kind in ("DIVIDEND", "SUBSTITUTE_DIVIDEND"):
            price = _money(base * Decimal(rng.randint(2, 8)) / 1000)
            amount = _money(price * rng.randint(5, 40))
            description = f"{security.name} dividend"
        elif kind in ("STOCK_DIVIDEND", "SPLIT", "TRANSFER", "EXTERNAL_ASSET_TRANSFER_IN"):
            units = Decimal(rng.randint(1, 10))
            amount = Decimal(0)
            description = f"{kind.replace('_', ' ').title()} {units} {security.ticker}"
        elif kind == "EXTERNAL_ASSET_TRANSFER_OUT":
            units = -Decimal(rng.randint(1, 5))
            amount = Decimal(0)
            description = f"Transfer out {abs(units)} {security.ticker}"
        else:
            security = None
            if kind == "CONTRIBUTION":
                amount = Decimal(rng.choice((250, 500, 1000)))
            elif kind == "WITHDRAWAL":
                amount = -Decimal(rng.choice((100, 200, 400)))
            elif kind == "INTEREST":
                amount = _money(Decimal(rng.randint(50, 900)) / 100)
            elif kind == "ADJUSTMENT":
                amount = _money(Decimal(rng.randint(-500, 500)) / 100)
            else:  # FEE, TAX
                amount = -_money(Decimal(rng.randint(100, 2500)) / 100)
            description = kind.replace("_", " ").title()
        out.append(
            Activity(
                id=new_id("activity"),
                type=kind,
                trade_date=day,
                settlement_date=(day + timedelta(days=2)).replace(hour=0, minute=0),
                description=description,
                security=security,
                units=units,
                price=price,
                amount=amount,
                fee=fee,
                currency=USD,
                institution=institution,
            )
        )
        day -= timedelta(days=1)
    return out


CRYPTO_PAIRS: dict[str, tuple[str, str, Decimal]] = {
    "BTC-USD": ("BTC", "USD", Decimal("64250.00")),
    "ETH-USD": ("ETH", "USD", Decimal("3120.50")),
    "ETH-BTC": ("ETH", "BTC", Decimal("0.04857")),
    "SOL-USD": ("SOL", "USD", Decimal("142.35")),
}
"""Cryptocurrency pairs a trading account can quote: symbol -> (base, quote, mid price)."""
