"""The records the emulator's state is made of.

Reference data (currencies, exchanges, securities, brokerages) is frozen; per-user records are
mutable and only ever changed under the state lock. Money and quantities are ``Decimal`` here and
become JSON numbers or decimal strings, as each SnapTrade schema wants, in :mod:`.render`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

__all__ = [
    "Account",
    "Activity",
    "Authorization",
    "Brokerage",
    "CheckedTrade",
    "Currency",
    "Exchange",
    "Order",
    "PortalSession",
    "Position",
    "Security",
    "User",
]

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Currency:
    """A currency as SnapTrade describes it (``{"id", "code", "name"}``)."""

    id: str
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Exchange:
    """A stock exchange.

    Attributes:
        suffix: What SnapTrade appends to tickers listed there (``.TO`` on the TSX); ``None`` in the US.
    """

    id: str
    code: str
    mic_code: str
    name: str
    timezone: str = "America/New_York"
    start_time: str = "09:30:00"
    close_time: str = "16:00:00"
    suffix: str | None = None


@dataclass(frozen=True, slots=True)
class Security:
    """A listed security the emulator knows (a stock or an ETF).

    Attributes:
        id: SnapTrade's universal symbol id (a UUID).
        ticker: Symbol.
        name: Description.
        kind: ``"stock"`` or ``"etf"`` (the position instrument ``kind``).
        price: Last price, used for quotes, market fills and position values.
        exchange: Listing exchange.
        currency: Trading currency.
        figi: FIGI code, when known.
    """

    id: str
    ticker: str
    name: str
    kind: str
    price: Decimal
    exchange: Exchange
    currency: Currency
    figi: str | None

    @property
    def type_code(self) -> str:
        """SnapTrade's security type code (``cs`` common stock, ``et`` ETF)."""
        return "et" if self.kind == "etf" else "cs"

    @property
    def type_description(self) -> str:
        """SnapTrade's security type description."""
        return "ETF" if self.kind == "etf" else "Common Stock"


@dataclass(frozen=True, slots=True)
class Brokerage:
    """A brokerage (institution) connections can be made to.

    Attributes:
        auth_type: How its connections authenticate, in SnapTrade's terms (``OAUTH``, ``SCRAPE``,
            ``UNOFFICIAL_API``, ``TOKEN``): ``/brokerageAuthorizationTypes`` and ``/institutions``.
        regions: Where its end users are (``US``, ``CA``...): ``/institutions``.
    """

    id: str
    slug: str
    name: str
    allows_trading: bool
    allows_fractional_units: bool = True
    is_paper: bool = False
    auth_type: str = "OAUTH"
    regions: tuple[str, ...] = ("US",)


@dataclass(slots=True, eq=False)
class User:
    """A SnapTrade user of one API key."""

    client_id: str
    user_id: str
    secret: str = field(repr=False)
    created_at: datetime


@dataclass(slots=True, eq=False)
class PortalSession:
    """A Connection Portal link handed out by ``loginSnapTradeUser``."""

    session_id: str
    client_id: str
    user_id: str
    created_at: datetime
    expires_at: float  # monotonic clock
    connection_type: str
    broker: str | None
    custom_redirect: str | None
    reconnect: str | None
    locale: str = "en"  # the portal language: en or pt-BR
    used: bool = False
    immediate_redirect: bool = False  # back to custom_redirect without the finish screen


@dataclass(slots=True, eq=False)
class Authorization:
    """A brokerage connection (SnapTrade's "brokerage authorization")."""

    id: str
    client_id: str
    user_id: str
    brokerage: Brokerage
    connection_type: str
    scenario: str
    created_at: datetime
    updated_at: datetime
    ready_at: float  # monotonic: account data answers 425 before this
    disabled: bool = False
    disabled_at: datetime | None = None
    last_refresh: float | None = None


@dataclass(slots=True, eq=False)
class Position:
    """Units of one security held in an account."""

    security: Security
    units: Decimal
    average_cost: Decimal


@dataclass(slots=True, eq=False)
class Order:
    """An order at the brokerage."""

    brokerage_order_id: str
    account_id: str
    security: Security
    action: str
    order_type: str
    time_in_force: str
    status: str
    total_quantity: Decimal
    filled_quantity: Decimal
    canceled_quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    execution_price: Decimal | None
    time_placed: datetime
    time_updated: datetime
    time_executed: datetime | None = None
    client_order_id: str | None = None
    expiry_date: datetime | None = None
    # Where the order came from (not rendered): the checked trade it placed, the order it replaced.
    trade_id: str | None = None
    replaces: str | None = None

    @property
    def open_quantity(self) -> Decimal:
        """Units neither filled nor canceled."""
        return max(ZERO, self.total_quantity - self.filled_quantity - self.canceled_quantity)


@dataclass(frozen=True, slots=True)
class Activity:
    """A transaction in an account's history."""

    id: str
    type: str
    trade_date: datetime
    settlement_date: datetime
    description: str
    security: Security | None
    units: Decimal
    price: Decimal
    amount: Decimal
    fee: Decimal
    currency: Currency
    institution: str
    external_reference_id: str | None = None


@dataclass(slots=True, eq=False)
class Account:
    """A brokerage account under a connection.

    Attributes:
        kind: ``investment``, ``deposit``, ``line_of_credit`` or ``annuity`` (``/accounts/all``).
        cash_or_margin: ``cash``, ``margin`` or ``unknown``.
        activities: Newest first (SnapTrade returns them in reverse chronological order).
        credit_limit: For lines of credit: the limit the available credit is computed from.
    """

    id: str
    authorization_id: str
    client_id: str
    user_id: str
    name: str
    number: str
    institution_name: str
    kind: str
    raw_type: str
    cash_or_margin: str
    currency: Currency
    cash: Decimal
    buying_power: Decimal
    created_at: datetime
    opening_date: datetime
    is_paper: bool = False
    positions: dict[str, Position] = field(default_factory=dict)
    orders: list[Order] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    credit_limit: Decimal | None = None

    @property
    def holdings_value(self) -> Decimal:
        """Market value of the positions."""
        return sum((p.units * p.security.price for p in self.positions.values()), ZERO)

    @property
    def total_value(self) -> Decimal:
        """Cash plus positions (for a line of credit: minus the balance owed)."""
        return self.cash + self.holdings_value


@dataclass(slots=True, eq=False)
class CheckedTrade:
    """A trade checked by ``/trade/impact``, waiting to be placed by ``/trade/{tradeId}``."""

    id: str
    client_id: str
    user_id: str
    account_id: str
    security: Security
    action: str
    order_type: str
    time_in_force: str
    units: Decimal
    price: Decimal | None
    stop: Decimal | None
    expires_at: float  # monotonic
    used: bool = False
