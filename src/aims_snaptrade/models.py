"""Typed results: lenient where SnapTrade is, exact where money is.

SnapTrade's enums are "best effort" (brokers' raw values pass through) and many fields are
nullable, so models keep unknown values as plain strings, accept missing fields as ``None`` and
keep every field they do not name (``model_extra``). Money and quantities are :class:`Decimal`,
parsed from the JSON text representation, never through binary float arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "Account",
    "Activity",
    "ApiStatus",
    "Balance",
    "ConnectionPortalLink",
    "DeletedUser",
    "Position",
    "RegisteredUser",
    "SnapTradeModel",
]


def _to_decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        # repr() of a float is the shortest text that round-trips: 0.1 -> "0.1", not 0.1000000000000000055.
        return Decimal(repr(value))
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not a number ({type(value).__name__})")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not number.is_finite():
        raise ValueError("not a finite number")
    return number


Money = Annotated[Decimal | None, BeforeValidator(_to_decimal)]
"""An exact amount: ``Decimal`` or ``None``."""


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: nested objects SnapTrade may send as null."""
    return value if isinstance(value, Mapping) else {}


def _item(data: Any, what: str) -> dict[str, Any]:
    """One element of a results list, which must be a JSON object."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{what} is a {type(data).__name__}, not an object")
    return dict(data)


def _code(value: Any) -> Any:
    # SnapTrade sends currencies either as "USD" or as {"id": ..., "code": "USD", "name": ...}.
    if isinstance(value, Mapping):
        return value.get("code")
    return value


CurrencyCode = Annotated[str | None, BeforeValidator(_code)]


class SnapTradeModel(BaseModel):
    """Base of all result models: immutable, keeps unknown fields, accepts API or Python names."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class ApiStatus(SnapTradeModel):
    """``GET /`` answer, plus the measured clock skew."""

    version: int | None = None
    timestamp: datetime | None = None
    online: bool = False
    clock_skew_seconds: float | None = Field(
        default=None, description="Local clock minus SnapTrade's (positive: local clock ahead)."
    )


class RegisteredUser(SnapTradeModel):
    """A SnapTrade user from ``register_user`` or ``ensure_user``; its secret is in the secret store, not here."""

    user_id: str
    created: bool = True
    """``True`` when this call registered the user; ``False`` when ``ensure_user`` found its secret stored."""


class DeletedUser(SnapTradeModel):
    """Acknowledgement of ``delete_user``; SnapTrade deletes asynchronously (``USER_DELETED`` webhook)."""

    user_id: str
    status: str | None = None
    detail: str | None = None
    local_secret_removed: bool = False


class ConnectionPortalLink(SnapTradeModel):
    """A Connection Portal link; it expires 5 minutes after it was issued."""

    redirect_uri: str = Field(alias="redirectURI")
    session_id: str | None = Field(default=None, alias="sessionId")
    expires_at: datetime


class Account(SnapTradeModel):
    """An account from ``list_all_user_accounts`` (kinds: investment, deposit, line_of_credit, annuity, ...)."""

    id: str
    kind: str | None = None
    connection_id: str | None = None
    display_name: str | None = None
    masked_account_number: str | None = None
    institution_id: str | None = None
    is_paper: bool | None = None
    cash_or_margin: str | None = None
    raw_type: str | None = None
    net_value_amount: Money = None
    net_value_currency: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> Account:
        """Build from one element of the API's ``results`` list."""
        data = _item(data, "an account")  # a copy: the fields below are added to it
        net = _mapping(data.get("net_value"))
        data["net_value_amount"] = net.get("amount")
        data["net_value_currency"] = net.get("currency")
        return cls.model_validate(data)


class Balance(SnapTradeModel):
    """Cash and buying power in one currency."""

    currency: CurrencyCode = None
    cash: Money = None
    buying_power: Money = None


class Position(SnapTradeModel):
    """A holding from ``get_all_account_positions``."""

    symbol: str | None = None
    instrument_kind: str | None = None
    description: str | None = None
    units: Money = None
    price: Money = None
    cost_basis: Money = None
    currency: CurrencyCode = None
    cash_equivalent: bool | None = None

    @classmethod
    def from_api(cls, data: Any) -> Position:
        """Build from one element of the API's ``results`` list."""
        data = _item(data, "a position")  # a copy: the fields below are set on it
        instrument = _mapping(data.get("instrument"))
        data["symbol"] = instrument.get("symbol") or instrument.get("raw_symbol")
        data["instrument_kind"] = instrument.get("kind")
        data["description"] = instrument.get("description")
        return cls.model_validate(data)


class Activity(SnapTradeModel):
    """A transaction (trade, dividend, contribution, fee, ...). ``type`` is open-ended."""

    id: str | None = None
    type: str | None = None
    description: str | None = None
    symbol: str | None = None
    units: Money = None
    price: Money = None
    amount: Money = None
    fee: Money = None
    currency: CurrencyCode = None
    trade_date: datetime | None = None
    settlement_date: datetime | None = None
    institution: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> Activity:
        """Build from one element of the API's ``data`` list."""
        data = _item(data, "an activity")  # a copy: the symbol below is set on it
        symbol = data.get("symbol")
        data["symbol"] = symbol.get("symbol") if isinstance(symbol, dict) else symbol
        return cls.model_validate(data)
