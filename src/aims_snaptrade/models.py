"""Typed results: lenient where SnapTrade is, exact where money is.

SnapTrade's enums are "best effort" (brokers' raw values pass through) and many fields are
nullable, so models keep unknown values as plain strings and accept missing fields as ``None``.
Money and quantities are :class:`Decimal`, parsed from the JSON text representation, never
through binary float arithmetic.

A model holds and dumps its typed fields only (``model_dump(mode="json")`` writes money as
decimal strings, never floats). The answer it was built from, every field as SnapTrade sent it
(money as the JSON's floats), stays reachable, read-only, as :attr:`SnapTradeModel.raw`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Annotated, Any, Self

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


def _item(data: Any, what: str) -> Mapping[str, Any]:
    """One element of a results list, which must be a JSON object."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{what} is a {type(data).__name__}, not an object")
    return data


def _code(value: Any) -> Any:
    # SnapTrade sends currencies either as "USD" or as {"id": ..., "code": "USD", "name": ...}.
    if isinstance(value, Mapping):
        return value.get("code")
    return value


CurrencyCode = Annotated[str | None, BeforeValidator(_code)]


_NO_ANSWER: Mapping[str, Any] = MappingProxyType({})
_RAW = "_raw"


class SnapTradeModel(BaseModel):
    """Base of all result models: immutable, typed fields only, accepts API or Python names.

    ``model_dump()`` and ``model_dump_json()`` carry the typed fields alone; the SnapTrade answer a
    model was built from is :attr:`raw`. Two models are equal when their typed fields are.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)
    # The answer is kept in pydantic's private-state slot (``__pydantic_private__``) without a
    # declared ``PrivateAttr``: a declared one makes pydantic run a Python hook after every
    # validation to fill in its default, a third of an Account's parsing. Pickling, copying,
    # deep-copying and ``model_copy`` carry the slot all the same.

    @property
    def raw(self) -> Mapping[str, Any]:
        """The JSON object SnapTrade answered, as the SDK returned it (read-only; fields the model
        does not name, money as sent). Empty for a model built by the library or by hand."""
        private = self.__pydantic_private__
        answer = None if private is None else private.get(_RAW)
        return _NO_ANSWER if answer is None else MappingProxyType(answer)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], **derived: Any) -> Self:
        """Validate ``answer`` (with ``derived`` fields set on top) and keep it as :attr:`raw`."""
        model = cls.model_validate({**answer, **derived} if derived else answer)
        # The SDK's body is a fresh dict per answer, owned by no one else: kept, not copied (a
        # plain dict, so models still pickle and deep-copy); ``raw`` hands out a read-only view.
        object.__setattr__(model, "__pydantic_private__", {_RAW: answer if isinstance(answer, dict) else dict(answer)})
        return model

    def __eq__(self, other: object) -> bool:
        # Typed fields only: the raw answer (a private attribute) does not make two models differ.
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = BaseModel.__hash__


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
        data = _item(data, "an account")
        net = _mapping(data.get("net_value"))
        return cls.from_answer(data, net_value_amount=net.get("amount"), net_value_currency=net.get("currency"))


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
        data = _item(data, "a position")
        instrument = _mapping(data.get("instrument"))
        return cls.from_answer(
            data,
            symbol=instrument.get("symbol") or instrument.get("raw_symbol"),
            instrument_kind=instrument.get("kind"),
            description=instrument.get("description"),
        )


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
        data = _item(data, "an activity")
        symbol = data.get("symbol")
        return cls.from_answer(data, symbol=symbol.get("symbol") if isinstance(symbol, dict) else symbol)
