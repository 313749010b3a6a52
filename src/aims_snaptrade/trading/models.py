"""Typed orders: what the caller asks for, what SnapTrade previews, what it placed, what we journal.

Quantities and prices are :class:`~decimal.Decimal` (never floats); SnapTrade's enums are open
(brokers' raw values pass through), so ``status``, ``order_type`` and ``time_in_force`` are plain
strings with the known values listed in :class:`OrderStatus` and friends for comparison.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.models import Money, SnapTradeModel

__all__ = [
    "Order",
    "OrderAction",
    "OrderIntent",
    "OrderPreview",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "Reconciliation",
    "TimeInForce",
]


class OrderAction(enum.StrEnum):
    """Sides of an equity order."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    """Order types SnapTrade accepts for equities."""

    MARKET = "Market"
    LIMIT = "Limit"
    STOP = "Stop"
    STOP_LIMIT = "StopLimit"


class TimeInForce(enum.StrEnum):
    """Times in force SnapTrade accepts on ``/trade/impact`` (``/trade/place`` also takes ``GTD``)."""

    DAY = "Day"
    GTC = "GTC"
    FOK = "FOK"
    IOC = "IOC"


class OrderStatus(enum.StrEnum):
    """Order statuses SnapTrade documents; brokers may send others, which are kept as they are."""

    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    PARTIAL_CANCELED = "PARTIAL_CANCELED"
    CANCEL_PENDING = "CANCEL_PENDING"
    EXECUTED = "EXECUTED"
    PARTIAL = "PARTIAL"
    REPLACE_PENDING = "REPLACE_PENDING"
    REPLACED = "REPLACED"
    STOPPED = "STOPPED"
    SUSPENDED = "SUSPENDED"
    EXPIRED = "EXPIRED"
    QUEUED = "QUEUED"
    TRIGGERED = "TRIGGERED"
    ACTIVATED = "ACTIVATED"
    PENDING_RISK_REVIEW = "PENDING_RISK_REVIEW"
    CONTINGENT_ORDER = "CONTINGENT_ORDER"


OPEN_STATUSES = frozenset({"PENDING", "ACCEPTED", "PARTIAL", "CANCEL_PENDING", "REPLACE_PENDING", "QUEUED"})
"""Statuses of an order that may still fill, be cancelled or be replaced."""

_ACTIONS = {a.value for a in OrderAction}
_TYPES = {t.value for t in OrderType}
_TIMES = {t.value for t in TimeInForce} | {"GTD"}


MAX_SIGNIFICANT_DIGITS = 15
"""Most significant digits of a quantity or price: every decimal number with at most 15 significant
digits survives a round trip through an IEEE-754 double, the JSON number SnapTrade's API types
these fields as, so the number a server reads back is the number sent."""
MAX_DECIMAL_PLACES = 18
"""Most digits after the decimal point (a crypto asset's smallest unit is at most 1e-18)."""
MAX_VALUE = Decimal("1e15")
"""Quantities, prices and notional values must be below this (and above zero)."""


def _exact(name: str, value: Any) -> Decimal | None:
    """``value`` as a positive Decimal the wire carries exactly (``None`` stays ``None``).

    Floats are refused (they rarely hold a price exactly); so are numbers with more than
    :data:`MAX_SIGNIFICANT_DIGITS` significant digits or :data:`MAX_DECIMAL_PLACES` decimal
    places, or not below :data:`MAX_VALUE`: sent as JSON numbers and read back as doubles, they
    would reach the brokerage as another number (``1.00000000000000001`` as ``1``, ``1e-400`` as
    ``0``, ``1e400`` as infinity).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise SnapTradeValidationError(
            f"{name} must be a Decimal (or an int or a decimal string), got {type(value).__name__}.",
            hint="Pass Decimal('1.5'), not 1.5: binary floats cannot hold most prices exactly.",
        )
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise SnapTradeValidationError(f"{name} must be a number, got {value!r}.") from None
    if not number.is_finite() or number <= 0:
        raise SnapTradeValidationError(f"{name} must be a positive, finite number, got {value!r}.")
    if number >= MAX_VALUE:
        raise SnapTradeValidationError(f"{name} must be below {MAX_VALUE:,f}, got {value!r}.")
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    while len(digits) > 1 and digits[-1] == 0:  # trailing zeros say nothing (and normalize() would round)
        digits, exponent = digits[:-1], exponent + 1
    if -exponent > MAX_DECIMAL_PLACES:
        raise SnapTradeValidationError(
            f"{name} has more than {MAX_DECIMAL_PLACES} decimal places ({value!r}); it would reach the "
            "brokerage rounded (or as zero)."
        )
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        raise SnapTradeValidationError(
            f"{name} has {len(digits)} significant digits ({value!r}); at most {MAX_SIGNIFICANT_DIGITS} "
            "reach the brokerage unchanged."
        )
    return number


class OrderRequest(BaseModel):
    """The terms of one equity order, validated before anything is sent.

    Build it with :meth:`build`, which raises :class:`~aims_snaptrade.errors.SnapTradeValidationError`
    naming every problem. Exactly one of ``units`` and ``notional_value`` is set; ``Limit`` and
    ``StopLimit`` orders carry ``price``, ``Stop`` and ``StopLimit`` orders carry ``stop``.
    """

    model_config = ConfigDict(frozen=True)

    account_id: str
    action: str
    symbol: str | None = None
    universal_symbol_id: str | None = None
    order_type: str = OrderType.MARKET.value
    time_in_force: str = TimeInForce.DAY.value
    units: Decimal | None = None
    notional_value: Decimal | None = None
    price: Decimal | None = None
    stop: Decimal | None = None

    @classmethod
    def build(
        cls,
        account_id: Any,
        *,
        action: Any,
        symbol: Any = None,
        universal_symbol_id: Any = None,
        order_type: Any = "Market",
        time_in_force: Any = "Day",
        units: Any = None,
        notional_value: Any = None,
        price: Any = None,
        stop: Any = None,
        require_symbol: bool = True,
    ) -> OrderRequest:
        """Validate the terms; raises one validation error listing every problem."""
        problems: list[str] = []
        if not isinstance(account_id, str) or not account_id.strip():
            problems.append("account_id must be a non-empty string")
        action = str(action).upper() if isinstance(action, str) else action
        if not isinstance(action, str) or action not in _ACTIONS:  # a list or dict is unhashable
            problems.append(f"action must be BUY or SELL, got {action!r}")
        if not isinstance(order_type, str) or order_type not in _TYPES:  # a list or dict is unhashable
            problems.append(f"order_type must be one of {', '.join(sorted(_TYPES))}, got {order_type!r}")
        if not isinstance(time_in_force, str) or time_in_force not in _TIMES:  # a list or dict is unhashable
            problems.append(f"time_in_force must be one of {', '.join(sorted(_TIMES))}, got {time_in_force!r}")
        for label, text in (("symbol", symbol), ("universal_symbol_id", universal_symbol_id)):
            if text is not None and (not isinstance(text, str) or not text.strip()):
                problems.append(f"{label} must be a non-empty string")
        if require_symbol and symbol is None and universal_symbol_id is None:
            problems.append("give the security as symbol='AAPL' or universal_symbol_id='<uuid>'")
        numbers: dict[str, Decimal | None] = {}
        for label, value in (("units", units), ("notional_value", notional_value), ("price", price), ("stop", stop)):
            try:
                numbers[label] = _exact(label, value)
            except SnapTradeValidationError as bad:
                problems.append(bad.message.rstrip("."))
        if (units is None) == (notional_value is None):
            problems.append("give exactly one of units and notional_value")
        if order_type in ("Limit", "StopLimit") and price is None:
            problems.append(f"a {order_type} order needs price")
        if order_type in ("Market", "Stop") and price is not None:
            problems.append(f"a {order_type} order takes no price")
        if order_type in ("Stop", "StopLimit") and stop is None:
            problems.append(f"a {order_type} order needs stop")
        if order_type in ("Market", "Limit") and stop is not None:
            problems.append(f"a {order_type} order takes no stop")
        if problems:
            raise SnapTradeValidationError(
                "Invalid order: " + "; ".join(problems) + ".",
                operation="place_order",
                hint="Nothing was sent; correct the order terms named.",
            )
        return cls(
            account_id=account_id,
            action=action,
            symbol=symbol,
            universal_symbol_id=universal_symbol_id,
            order_type=order_type,
            time_in_force=time_in_force,
            **numbers,
        )

    def notional(self, last_price: Decimal | None = None) -> Decimal | None:
        """What the order is worth: ``notional_value``, or units times the limit (else ``last_price``)."""
        if self.notional_value is not None:
            return self.notional_value
        unit_price = self.price if self.price is not None else last_price
        if self.units is None or unit_price is None:
            return None
        return self.units * unit_price

    def sdk_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``get_order_impact`` / ``place_force_order`` (None values left out)."""
        arguments = {
            "account_id": self.account_id,
            "action": self.action,
            "order_type": self.order_type,
            "time_in_force": self.time_in_force,
            "universal_symbol_id": self.universal_symbol_id,
            "symbol": self.symbol if self.universal_symbol_id is None else None,
            # Decimals: the transport writes their own digits (never through float).
            "units": self.units,
            "notional_value": None if self.notional_value is None else format(self.notional_value, "f"),
            "price": self.price,
            "stop": self.stop,
        }
        return {k: v for k, v in arguments.items() if v is not None}


class OrderPreview(SnapTradeModel):
    """SnapTrade's impact check of an order, ready to be confirmed and placed once.

    Show ``estimated_cost``, ``estimated_fees`` and ``buying_power_after`` to the account
    owner; pass the preview and its ``confirmation`` token to ``place_order`` once they agree.
    Changing anything (quantity, symbol, side, price) needs a new preview: the token is bound to
    exactly these fields and refused for anything else, after ``expires_at``, and after one use.

    Attributes:
        trade_id: SnapTrade's id of the checked trade (valid 5 minutes).
        client_order_id: The UUID4 the order will be journaled under.
        estimated_price: The price SnapTrade's impact check used.
        estimated_cost: Units times ``estimated_price`` (before fees).
        estimated_fees: Estimated commission plus foreign-exchange fees.
        buying_power_after: SnapTrade's estimate of the cash remaining after the trade.
        expires_at: When SnapTrade forgets the checked trade.
        confirmation: The confirmation token (HMAC over every field above).
    """

    user_id: str
    account_id: str
    trade_id: str
    client_order_id: str
    action: str
    symbol: str | None = None
    universal_symbol_id: str
    order_type: str
    time_in_force: str
    units: Money = None
    notional_value: Money = None
    price: Money = None
    stop: Money = None
    estimated_price: Money = None
    estimated_cost: Money = None
    estimated_fees: Money = None
    buying_power_after: Money = None
    currency: str | None = None
    expires_at: datetime
    confirmation: str = Field(repr=False)

    def bound_fields(self) -> dict[str, Any]:
        """The fields a confirmation token is bound to (everything but the token itself)."""
        return self.model_dump(mode="json", exclude={"confirmation"})


def _symbol_fields(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    universal = record.get("universal_symbol")
    if isinstance(universal, Mapping):
        return universal.get("symbol") or universal.get("raw_symbol"), universal.get("id")
    symbol = record.get("symbol")
    return (None, symbol) if isinstance(symbol, str) else (None, None)


class Order(SnapTradeModel):
    """An order as SnapTrade reports it (``AccountOrderRecord``): exact quantities and prices.

    ``status``, ``order_type`` and ``time_in_force`` keep whatever the brokerage sent; compare with
    :class:`OrderStatus` values. ``client_order_id`` is present when the record carries it.
    """

    brokerage_order_id: str
    account_id: str | None = None
    status: str | None = None
    action: str | None = None
    symbol: str | None = None
    universal_symbol_id: str | None = None
    order_type: str | None = None
    time_in_force: str | None = None
    total_quantity: Money = None
    open_quantity: Money = None
    filled_quantity: Money = None
    canceled_quantity: Money = None
    execution_price: Money = None
    limit_price: Money = None
    stop_price: Money = None
    time_placed: datetime | None = None
    time_updated: datetime | None = None
    time_executed: datetime | None = None
    client_order_id: str | None = None

    @classmethod
    def from_api(cls, record: Mapping[str, Any], account_id: str | None = None) -> Order:
        """Build from one ``AccountOrderRecord``."""
        symbol, universal_symbol_id = _symbol_fields(record)
        return cls.from_answer(record, account_id=account_id, symbol=symbol, universal_symbol_id=universal_symbol_id)

    @property
    def is_open(self) -> bool:
        """The order may still fill, be cancelled or be replaced."""
        return self.status in OPEN_STATUSES


IntentKind = Literal["checked", "force", "replace", "cancel"]
IntentStatus = Literal["pending", "placed", "not_placed"]


class OrderIntent(BaseModel):
    """One order the library is about to send, has sent, or has settled: a row of the journal.

    Recorded durably before the request leaves. ``status`` is ``pending`` until the answer (or
    :meth:`reconcile_order <aims_snaptrade.SafeSnapTradeClient.reconcile_order>`) settles it as
    ``placed`` (with ``brokerage_order_id``) or ``not_placed``. A ``pending`` intent whose call
    has returned is an unknown outcome.

    A ``cancel`` intent journals a cancellation (``cancels``): ``placed`` means the order was
    cancelled, ``not_placed`` that the cancellation did not happen; it has no terms of its own.

    Attributes:
        kind: ``checked`` (a confirmed preview), ``force`` (``place_order_now``), ``replace`` or ``cancel``.
        trade_id: The checked trade placed (``checked``).
        replaces: The brokerage order being replaced (``replace``).
        cancels: The brokerage order being cancelled (``cancel``).
        created_at: When the intent was recorded (just before the first send).
        sent_at: When the latest attempt was started (journaled, before any local wait).
        left_by: The last moment the latest attempt's request could have left this machine: journaled
            before sending as the call's deadline (every rate-limit, trade-slot and retry wait is
            bounded by it), and moved to when the call ended once it has. ``order_settle_seconds``
            counts from here.
        attempts: How many times the order was sent (a second only by ``reconcile_order(resend=True)``).
        detail: Why it settled as it did.
    """

    model_config = ConfigDict(frozen=True)

    client_order_id: str
    kind: IntentKind
    user_id: str
    account_id: str
    action: str | None = None
    symbol: str | None = None
    universal_symbol_id: str | None = None
    order_type: str | None = None
    time_in_force: str | None = None
    units: Decimal | None = None
    notional_value: Decimal | None = None
    price: Decimal | None = None
    stop: Decimal | None = None
    trade_id: str | None = None
    replaces: str | None = None
    cancels: str | None = None
    created_at: datetime
    sent_at: datetime
    left_by: datetime | None = None
    attempts: int = 1
    status: IntentStatus = "pending"
    brokerage_order_id: str | None = None
    settled_at: datetime | None = None
    detail: str | None = None

    @staticmethod
    def new_client_order_id() -> str:
        """A fresh UUID4, chosen before anything is sent."""
        return str(uuid.uuid4())

    def to_json(self) -> str:
        """The journal's serialised form."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> OrderIntent:
        """Parse the journal's serialised form."""
        return cls.model_validate_json(text)


Outcome = Literal["placed", "not_placed", "unknown"]
UnknownReason = Literal[
    "settling", "malformed_answer", "stale_source", "ambiguous", "replacement_pending", "lookup_failed"
]
"""Why an outcome is still unknown (see ``docs/trading.md``)."""
Source = Literal["answer", "recent_orders", "orders", "order_detail", "journal"]
"""Where a verdict's evidence came from; ``orders`` (the account's order list) is cached by SnapTrade."""


class Reconciliation(SnapTradeModel):
    """What :meth:`reconcile_order` established about one intent.

    Attributes:
        outcome: ``placed`` (``order`` is the order), ``not_placed`` (no such order exists; safe
            to send again), or ``unknown`` (look again at ``retry_at``).
        intent: The intent as journaled after reconciliation.
        order: The order, when placed.
        resent: ``True`` when this call sent the order again (``resend=True``).
        retry_at: When to look again, for ``unknown``.
        reason: Why, in words.
        unknown_reason: Why the outcome is ``unknown``: ``settling`` (the request may still arrive
            before ``retry_at``), ``malformed_answer`` (a look-up answered empty, ``null`` or in a
            shape its schema does not allow: it proves nothing), ``stale_source`` (only SnapTrade's
            cached order list could be read, and an order missing there proves nothing),
            ``ambiguous`` (identical unsettled intents compete for one listed order),
            ``replacement_pending`` (the replaced order says ``REPLACED``, its replacement is not listed
            yet) or ``lookup_failed`` (the look-up itself failed).
        source: Where the evidence came from: ``answer`` (SnapTrade's answer to the order),
            ``recent_orders`` (real time), ``order_detail`` (real time), ``orders`` (SnapTrade's
            cached order list) or ``journal`` (settled before).
        stale: The verdict rests on a cached source; a stale verdict never allows a resend.
    """

    outcome: Outcome
    intent: OrderIntent
    order: Order | None = None
    resent: bool = False
    retry_at: datetime | None = None
    reason: str = ""
    unknown_reason: UnknownReason | None = None
    source: Source | None = None
    stale: bool = False
