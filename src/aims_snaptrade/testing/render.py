"""Turn state records into SnapTrade's JSON shapes.

Each function follows one schema of the installed SDK (``snaptrade_client.model``), field by field:
money is a JSON number where the schema says ``number`` and a decimal string where it says
``string/decimal`` (positions v2, order quantities, balances v2); ids are UUID strings where the
schema says ``uuid``; timestamps are ISO 8601 in UTC with a ``Z``; dates are ``YYYY-MM-DD``.
``tests/testing/test_emulator_schemas.py`` validates every answer against those schemas.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from aims_snaptrade.testing.config import ClientCredentials
from aims_snaptrade.testing.records import (
    Account,
    Activity,
    Authorization,
    Brokerage,
    CheckedTrade,
    Currency,
    Exchange,
    Order,
    Position,
    Security,
)
from aims_snaptrade.testing.seed import ref_id

__all__ = [
    "iso",
    "render_account",
    "render_account_order",
    "render_activity",
    "render_authorization",
    "render_authorization_types",
    "render_balance",
    "render_balance_history",
    "render_balances_v2",
    "render_brokerage",
    "render_brokerage_instrument",
    "render_connection_account",
    "render_crypto_pair",
    "render_crypto_quote",
    "render_exchange",
    "render_holdings",
    "render_institution",
    "render_option_quote",
    "render_order",
    "render_order_v2",
    "render_partner",
    "render_partner_stats",
    "render_position",
    "render_position_v2",
    "render_quote",
    "render_return_rates",
    "render_subscription",
    "render_trade_impact",
    "render_universal_symbol",
]

JSON = dict[str, Any]

_CATEGORY = {"investment": "INVESTMENT", "deposit": "DEPOSIT", "line_of_credit": "LOC", "annuity": "ANNUITY"}


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day(moment: datetime | date) -> str:
    return moment.date().isoformat() if isinstance(moment, datetime) else moment.isoformat()


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _currency(currency: Currency) -> JSON:
    return {"id": currency.id, "code": currency.code, "name": currency.name}


def render_exchange(exchange: Exchange) -> JSON:
    """SnapTrade's ``Exchange`` (``/exchanges`` and inside symbols)."""
    return {
        "id": exchange.id,
        "code": exchange.code,
        "mic_code": exchange.mic_code,
        "name": exchange.name,
        "timezone": exchange.timezone,
        "start_time": exchange.start_time,
        "close_time": exchange.close_time,
        "suffix": exchange.suffix,
    }


def _security_type(security: Security) -> JSON:
    return {
        "id": ref_id("security-type", security.type_code),
        "code": security.type_code,
        "description": security.type_description,
        "is_supported": True,
    }


def _figi(security: Security) -> JSON | None:
    if security.figi is None:
        return None
    return {"figi_code": security.figi, "figi_share_class": None}


def _symbol(security: Security) -> JSON:
    """SnapTrade's ``Symbol`` (activities)."""
    return {
        "id": security.id,
        "symbol": security.ticker,
        "raw_symbol": security.ticker,
        "description": security.name,
        "currency": _currency(security.currency),
        "exchange": render_exchange(security.exchange),
        "type": _security_type(security),
        "figi_code": security.figi,
        "figi_instrument": _figi(security),
    }


def render_universal_symbol(security: Security) -> JSON:
    """SnapTrade's ``UniversalSymbol``."""
    out = _symbol(security)
    out["currencies"] = [_currency(security.currency)]
    return out


def _sync_transactions(account: Account, ready: bool) -> JSON:
    first = account.activities[-1].trade_date if account.activities else None
    return {
        "initial_sync_completed": ready,
        "last_successful_sync": _day(account.created_at) if ready else None,
        "first_transaction_date": _day(first) if first and ready else None,
    }


def render_account(account: Account, ready: bool = True) -> JSON:
    """SnapTrade's ``Account`` (``/accounts``, ``/accounts/{id}``)."""
    return {
        "id": account.id,
        "brokerage_authorization": account.authorization_id,
        "name": account.name,
        "number": account.number,
        "institution_name": account.institution_name,
        "created_date": iso(account.created_at),
        "opening_date": iso(account.opening_date),
        "funding_date": iso(account.opening_date),
        "sync_status": {
            "transactions": _sync_transactions(account, ready),
            "holdings": {
                "initial_sync_completed": ready,
                "last_successful_sync": iso(account.created_at) if ready else None,
                "holdings_unavailable": False,
            },
        },
        "balance": {"total": {"amount": float(account.total_value), "currency": account.currency.code}},
        "status": "open",
        "raw_type": account.raw_type,
        "account_category": _CATEGORY.get(account.kind, "INVESTMENT"),
        "meta": {"type": account.raw_type, "status": "ACTIVE", "institution_name": account.institution_name},
        "is_paper": account.is_paper,
        "institution_account_id": account.number,
        "cash_restrictions": [],
    }


def render_connection_account(account: Account, institution_id: str, ready: bool = True) -> JSON:
    """SnapTrade's ``ConnectionAccount`` (``/accounts/all``, ``/accounts/{id}/details``), by ``kind``."""
    synced = iso(account.created_at) if ready else None
    value = {"amount": float(account.total_value), "currency": account.currency.code}
    out: JSON = {
        "kind": account.kind,
        "id": account.id,
        "connection_id": account.authorization_id,
        "masked_account_number": "****" + account.number[-4:],
        "display_name": account.name,
        "institution_account_id": account.number,
        "institution_id": institution_id,
        "opening_date": iso(account.opening_date),
        "raw_type": account.raw_type,
        "net_value": value,
    }
    if account.kind == "investment":
        out["sync_status"] = {
            "transactions": _sync_transactions(account, ready),
            "orders": synced,
            "positions": synced,
            "balances": synced,
        }
        out["is_paper"] = account.is_paper
        out["funding_date"] = iso(account.opening_date)
        out["cash_or_margin"] = account.cash_or_margin
    elif account.kind == "annuity":
        out["sync_status"] = {"balances": synced}
    else:
        out["sync_status"] = {"transactions": _sync_transactions(account, ready), "balances": synced}
    if account.kind == "line_of_credit":
        limit = account.credit_limit or Decimal(0)
        out["available_credit"] = {"amount": float(limit + account.cash), "currency": account.currency.code}
        out["minimum_payment_amount"] = {"amount": 25.0, "currency": account.currency.code}
        out["next_payment_date"] = "2026-07-15"
    return out


def render_balance(account: Account) -> JSON:
    """SnapTrade's ``Balance`` (one per currency; the emulator's accounts hold one)."""
    return {
        "currency": _currency(account.currency),
        "cash": float(account.cash),
        "buying_power": float(account.buying_power),
    }


def render_balances_v2(account: Account, as_of: datetime) -> JSON:
    """SnapTrade's ``AccountBalancesV2Response`` (amounts as decimal strings)."""
    code = account.currency.code
    basis = "margin" if account.cash_or_margin == "margin" else "cash"
    return {
        "account_id": account.id,
        "cash_or_margin": account.cash_or_margin,
        "net_value": {"amount": str(account.total_value), "currency": code},
        "cash": [{"currency": code, "amount": str(account.cash)}],
        "buying_power": [{"currency": code, "amount": str(account.buying_power), "basis": basis}],
        "margin": {"loan_balances": []},
        "data_freshness": {"as_of": iso(as_of)},
    }


def render_position(position: Position) -> JSON:
    """SnapTrade's ``Position`` (``/holdings``): numbers, nested ``symbol.symbol``."""
    security = position.security
    return {
        "symbol": {
            "symbol": render_universal_symbol(security),
            "id": ref_id("brokerage-symbol", security.ticker),
            "description": security.name,
            "local_id": security.ticker,
            "is_quotable": True,
            "is_tradable": True,
        },
        "units": float(position.units),
        "price": float(security.price),
        "open_pnl": float((security.price - position.average_cost) * position.units),
        "average_purchase_price": float(position.average_cost),
        "fractional_units": float(position.units % 1) if position.units % 1 else None,
        "currency": _currency(security.currency),
        "cash_equivalent": False,
        "tax_lots": [],
    }


def _instrument(security: Security) -> JSON:
    """SnapTrade's ``Instrument`` union member for a stock or an ETF (discriminated by ``kind``)."""
    return {
        "kind": security.kind,
        "id": security.id,
        "symbol": security.ticker,
        "raw_symbol": security.ticker,
        "description": security.name,
        "currency": security.currency.code,
        "exchange": security.exchange.mic_code,
        "figi_instrument": _figi(security),
    }


def render_position_v2(position: Position) -> JSON:
    """SnapTrade's ``AccountPosition`` (``/positions/all``): instrument by kind, decimal strings."""
    security = position.security
    return {
        "instrument": _instrument(security),
        "units": str(position.units),
        "price": str(security.price),
        "cost_basis": str(position.average_cost),
        "currency": security.currency.code,
        "cash_equivalent": False,
        "tax_lots": [],
    }


def render_order(order: Order) -> JSON:
    """SnapTrade's ``AccountOrderRecord``."""
    return {
        "brokerage_order_id": order.brokerage_order_id,
        "status": order.status,
        "universal_symbol": render_universal_symbol(order.security),
        "option_symbol": None,
        "quote_universal_symbol": None,
        "quote_currency": None,
        "action": order.action,
        "total_quantity": str(order.total_quantity),
        "open_quantity": str(order.open_quantity),
        "canceled_quantity": str(order.canceled_quantity),
        "filled_quantity": str(order.filled_quantity),
        "execution_price": _dec(order.execution_price),
        "limit_price": _dec(order.limit_price),
        "stop_price": _dec(order.stop_price),
        "trailing_stop": None,
        "order_type": order.order_type,
        "time_in_force": order.time_in_force,
        "time_placed": iso(order.time_placed),
        "time_updated": iso(order.time_updated),
        "time_executed": iso(order.time_executed) if order.time_executed else None,
        "expiry_date": iso(order.expiry_date) if order.expiry_date else None,
        "symbol": order.security.id,
        "child_brokerage_order_ids": None,
        # Emulated orders never belong to a complex (OCO/OTO/OTOCO) group. order_role is left out
        # rather than null, as in v2: the SDK's nullable enum refuses None.
        "brokerage_group_order_id": None,
        # Not in SnapTrade's AccountOrderRecord: brokerages that echo the id let reconciliation
        # match on it; the emulator shows it so that path is testable (clients must tolerate it).
        "client_order_id": order.client_order_id,
    }


# --- orders in the v2 and "all orders" formats -------------------------------------------------

# v2 formats spell order types and times in force in capitals; the emulator stores the v1 spelling.
_V2_ORDER_TYPES = {"Market": "MARKET", "Limit": "LIMIT", "Stop": "STOP", "StopLimit": "STOP_LIMIT"}
_TIMES_IN_FORCE = frozenset({"DAY", "GTC", "FOK", "IOC", "GTD", "MOO", "EHP", "EHA"})
# The v2 status enum (legs, AccountOrder) has no ACCEPTED or PARTIAL: an accepted order with
# nothing filled is PENDING there, a partly filled one PARTIALLY_EXECUTED.
_V2_STATUSES = frozenset(
    {
        "PENDING",
        "REJECTED",
        "CANCELED",
        "CANCEL_PENDING",
        "PARTIAL_CANCELED",
        "EXECUTED",
        "PARTIALLY_EXECUTED",
        "REPLACED",
        "REPLACE_PENDING",
        "EXPIRED",
    }
)
_V1_TO_V2_STATUS = {"ACCEPTED": "PENDING", "PARTIAL": "PARTIALLY_EXECUTED", "FAILED": "REJECTED", "NONE": "PENDING"}


def _v2_status(status: str) -> str:
    return status if status in _V2_STATUSES else _V1_TO_V2_STATUS.get(status, "PENDING")


def _time_in_force(order: Order) -> str:
    """``DAY``, ``GTC``... or ``OTHER`` when the stored value maps to none of them."""
    value = order.time_in_force.upper()
    return value if value in _TIMES_IN_FORCE else "OTHER"


def _price_effect(order: Order) -> str:
    return "DEBIT" if order.action == "BUY" else "CREDIT"


def _order_quantities(order: Order) -> JSON:
    return {
        "total_quantity": str(order.total_quantity),
        "filled_quantity": str(order.filled_quantity),
        "canceled_quantity": str(order.canceled_quantity),
        "execution_price": _dec(order.execution_price),
    }


def render_order_v2(order: Order) -> JSON:
    """SnapTrade's ``AccountOrderRecordV2`` (``/orders/v2``, ``/recentOrders/v2``, order detail v2).

    Every emulated order has one leg; ``status`` keeps the v1 enum (as the schema says), the leg's
    uses the v2 one. Orders are not part of complex groups, so there is no group id or role.
    """
    security = order.security
    return {
        "brokerage_order_id": order.brokerage_order_id,
        "brokerage_group_order_id": None,
        # order_role is left out rather than null: the SDK's nullable enum refuses None.
        "status": order.status,
        "order_type": _V2_ORDER_TYPES.get(order.order_type, order.order_type),
        "time_in_force": order.time_in_force.upper(),
        "time_placed": iso(order.time_placed),
        "time_executed": iso(order.time_executed) if order.time_executed else None,
        "price_currency": security.currency.code,
        "execution_price": _dec(order.execution_price),
        "limit_price": _dec(order.limit_price),
        "stop_price": _dec(order.stop_price),
        "trailing_stop": None,
        "price_effect": _price_effect(order),
        "legs": [
            {
                "leg_id": None,
                "instrument": {
                    "symbol": security.ticker,
                    "description": security.name,
                    "asset_type": "EQUITY",
                    "exchange_mic_code": security.exchange.mic_code,
                    "figi_code": security.figi,
                },
                "action": order.action,
                **_order_quantities(order),
                "status": _v2_status(order.status),
            }
        ],
    }


def _order_type_configuration(order: Order) -> JSON:
    """The ``kind``-discriminated ``order_type`` of ``AccountOrder``: each kind carries its prices."""
    limit, stop = _dec(order.limit_price), _dec(order.stop_price)
    if order.order_type == "Market":
        return {"kind": "market"}
    if order.order_type == "Limit" and limit is not None:
        return {"kind": "limit", "limit_price": limit}
    if order.order_type == "Stop" and stop is not None:
        return {"kind": "stop", "stop_price": stop}
    if order.order_type == "StopLimit" and limit is not None and stop is not None:
        return {"kind": "stop_limit", "stop_price": stop, "limit_price": limit}
    return {"kind": "other", "raw_type": order.order_type, "limit_price": limit, "stop_price": stop}


def render_account_order(order: Order) -> JSON:
    """SnapTrade's ``AccountOrder`` (``/orders/all``): v2 statuses, instruments as in positions."""
    return {
        "brokerage_order_id": order.brokerage_order_id,
        "status": _v2_status(order.status),
        "order_type": _order_type_configuration(order),
        "time_in_force": _time_in_force(order),
        "price_effect": _price_effect(order),
        "legs": [
            {
                "leg_id": None,
                "instrument": _instrument(order.security),
                "action": order.action,
                **_order_quantities(order),
                "status": _v2_status(order.status),
            }
        ],
        "expiry_date": iso(order.expiry_date) if order.expiry_date else None,
        "price_currency": order.security.currency.code,
        **_order_quantities(order),
        "open_quantity": str(order.open_quantity),
        "time_placed": iso(order.time_placed),
        "time_updated": iso(order.time_updated),
        "time_executed": iso(order.time_executed) if order.time_executed else None,
        "group": None,
    }


def render_activity(activity: Activity) -> JSON:
    """SnapTrade's ``AccountUniversalActivity``."""
    return {
        "id": activity.id,
        "symbol": _symbol(activity.security) if activity.security else None,
        "currency_universal_symbol": None,
        "option_symbol": None,
        "price": float(activity.price),
        "units": float(activity.units),
        "amount": float(activity.amount),
        "currency": _currency(activity.currency),
        "type": activity.type,
        "option_type": "",
        "description": activity.description,
        "trade_date": iso(activity.trade_date),
        "settlement_date": iso(activity.settlement_date),
        "fee": float(activity.fee),
        "fx_rate": None,
        "institution": activity.institution,
        "external_reference_id": activity.external_reference_id,
    }


def _logo_url(brokerage: Brokerage) -> str:
    return f"https://logos.snaptrade-emulator.invalid/{brokerage.slug.lower()}.svg"


def render_brokerage(brokerage: Brokerage) -> JSON:
    """SnapTrade's ``Brokerage``."""
    return {
        "id": brokerage.id,
        "slug": brokerage.slug,
        "name": brokerage.name,
        "display_name": brokerage.name,
        "description": f"{brokerage.name} (SnapTrade emulator)",
        "aws_s3_logo_url": _logo_url(brokerage),
        "aws_s3_square_logo_url": None,
        "url": None,
        "enabled": True,
        "maintenance_mode": False,
        "is_degraded": False,
        "allows_trading": brokerage.allows_trading,
        "allows_fractional_units": brokerage.allows_fractional_units,
        "has_reporting": True,
        "is_real_time_connection": True,
        "brokerage_type": {"id": ref_id("brokerage-type", "traditional"), "name": "Traditional Brokerage"},
        "exchanges": [],
        "open_url": None,
    }


def render_authorization(authorization: Authorization) -> JSON:
    """SnapTrade's ``BrokerageAuthorization``."""
    return {
        "id": authorization.id,
        "created_date": iso(authorization.created_at),
        "updated_date": iso(authorization.updated_at),
        "brokerage": render_brokerage(authorization.brokerage),
        "name": f"Connection-{authorization.brokerage.slug}",
        "type": authorization.connection_type,
        "disabled": authorization.disabled,
        "disabled_date": iso(authorization.disabled_at) if authorization.disabled_at else None,
        "meta": {},
        "is_eligible_for_payout": False,
        "data_freshness_mode": {"institution": "delayed", "snaptrade": "delayed"},
    }


def render_holdings(account: Account, orders: list[Order], ready: bool = True) -> JSON:
    """SnapTrade's ``AccountHoldingsAccount`` (the deprecated ``/holdings``)."""
    return {
        "account": render_account(account, ready),
        "balances": [render_balance(account)],
        "positions": [render_position(p) for p in account.positions.values()],
        "option_positions": [],
        "orders": [render_order(o) for o in orders],
        "total_value": {"value": float(account.total_value), "currency": account.currency.code},
    }


def render_quote(security: Security) -> JSON:
    """One item of SnapTrade's ``SymbolsQuotes``: a fixed one-cent spread around the last price."""
    cent = Decimal("0.01")
    return {
        "symbol": render_universal_symbol(security),
        "last_trade_price": float(security.price),
        "bid_price": float(security.price - cent),
        "ask_price": float(security.price + cent),
        "bid_size": 100.0,
        "ask_size": 100.0,
    }


def render_trade_impact(trade: CheckedTrade, account: Account, remaining_cash: Decimal) -> JSON:
    """SnapTrade's ``ManualTradeAndImpact`` (``/trade/impact``)."""
    security = trade.security
    return {
        "trade": {
            "id": trade.id,
            "account": trade.account_id,
            "order_type": trade.order_type,
            "time_in_force": trade.time_in_force,
            "symbol": {
                "universal_symbol_id": security.id,
                "currency": _currency(security.currency),
                "local_id": security.ticker,
                "description": security.name,
                "symbol": security.ticker,
                "brokerage_symbol_id": ref_id("brokerage-symbol", security.ticker),
            },
            "action": trade.action,
            "units": float(trade.units),
            "price": _num(trade.price if trade.price is not None else security.price),
        },
        "trade_impacts": [
            {
                "account": account.id,
                "currency": account.currency.id,
                "remaining_cash": float(remaining_cash),
                "estimated_commission": 0.0,
                "forex_fees": 0.0,
            }
        ],
        "combined_remaining_balance": {
            "account": {
                "id": account.id,
                "name": account.name,
                "number": account.number,
                "institution_account_id": account.number,
                "sync_status": {
                    "transactions": _sync_transactions(account, True),
                    "holdings": {
                        "initial_sync_completed": True,
                        "last_successful_sync": iso(account.created_at),
                        "holdings_unavailable": False,
                    },
                },
            },
            "currency": _currency(account.currency),
            "cash": float(remaining_cash),
        },
    }


# --- reference data -----------------------------------------------------------------------------

# Institution connection methods by authorization type: official APIs use OAuth, the others ask
# for the user's brokerage credentials, except token-based ones (the Sandbox) which take a key.
_CONNECTION_METHODS = {"OAUTH": "OAUTH", "SCRAPE": "CREDENTIALS", "UNOFFICIAL_API": "CREDENTIALS", "TOKEN": "API_KEY"}


def render_partner(client: ClientCredentials, brokerages: Iterable[Brokerage]) -> JSON:
    """SnapTrade's ``PartnerData`` (``/snapTrade/partners``) for one API key.

    Every data scope is on; there is no logo or redirect URI configured (SnapTrade answers ``null``
    for those on personal keys and unconfigured clients alike).
    """
    return {
        "slug": client.client_id,
        "name": f"{client.client_id} (SnapTrade emulator)",
        "logo_url": None,
        "allowed_brokerages": [render_brokerage(b) for b in brokerages],
        "can_access_trades": True,
        "can_access_holdings": True,
        "can_access_account_history": True,
        "can_access_reference_data": True,
        "can_access_portfolio_management": False,
        "can_access_orders": True,
        "redirect_uri": None,
        "pin_required": False,
    }


def render_institution(brokerage: Brokerage) -> JSON:
    """SnapTrade's ``Institution`` (``/institutions``): the public catalogue entry of a brokerage."""
    return {
        "slug": brokerage.slug,
        "name": brokerage.name,
        "display_name": brokerage.name,
        "description": f"{brokerage.name} (SnapTrade emulator)",
        "website": None,
        "logo_url": _logo_url(brokerage),
        "square_logo_url": None,
        "release_stage": "GENERALLY_AVAILABLE",
        "is_paper": brokerage.is_paper,
        "regions": list(brokerage.regions),
        "connection": {
            "methods": [_CONNECTION_METHODS.get(brokerage.auth_type, "CREDENTIALS")],
            "scopes": ["READ", "TRADE"] if brokerage.allows_trading else ["READ"],
        },
    }


def render_authorization_types(brokerage: Brokerage) -> list[JSON]:
    """SnapTrade's ``BrokerageAuthorizationTypeReadOnly`` entries of one brokerage: read, and trade
    where the brokerage trades."""
    kinds = ("read", "trade") if brokerage.allows_trading else ("read",)
    return [
        {
            "id": ref_id("authorization-type", f"{brokerage.slug}:{kind}"),
            "type": kind,
            "auth_type": brokerage.auth_type,
            "brokerage": {"id": brokerage.id, "name": brokerage.name, "slug": brokerage.slug},
        }
        for kind in kinds
    ]


def render_brokerage_instrument(security: Security, brokerage: Brokerage) -> JSON:
    """SnapTrade's ``BrokerageInstrument`` (``/brokerages/{slug}/instruments``)."""
    return {
        "symbol": security.ticker,
        "exchange_mic": security.exchange.mic_code,
        "tradeable": brokerage.allows_trading,
        "fractionable": brokerage.allows_fractional_units,
        "universal_symbol_id": security.id,
    }


# --- history and returns ------------------------------------------------------------------------


def render_return_rates(rates: Iterable[tuple[str, Decimal]], created: datetime) -> JSON:
    """SnapTrade's ``RateOfReturnResponse`` (percent as a JSON number: ``5.97`` is +5.97 %)."""
    return {
        "data": [
            {"timeframe": timeframe, "return_percent": float(percent), "created_date": iso(created)}
            for timeframe, percent in rates
        ]
    }


def render_balance_history(points: Iterable[tuple[date, Decimal]], currency: Currency) -> JSON:
    """SnapTrade's ``AccountValueHistoryResponse`` (values as decimal strings, oldest first)."""
    return {
        "history": [{"date": day.isoformat(), "total_value": str(value)} for day, value in points],
        "currency": currency.code,
    }


# --- crypto pairs, option quotes, trade-detection subscriptions, partner statistics ------------


def render_crypto_pair(symbol: str, base: str, quote: str) -> JSON:
    """``CryptocurrencyPair``."""
    return {"symbol": symbol, "base": base, "quote": quote}


def render_crypto_quote(mid: Decimal, now: datetime) -> JSON:
    """``CryptocurrencyPairQuote``: a spread of 0.1% around ``mid``, as strings like SnapTrade's."""
    exponent = mid.as_tuple().exponent
    half = (mid * Decimal("0.0005")).quantize(Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0))
    return {"bid": str(mid - half), "ask": str(mid + half), "mid": str(mid), "timestamp": iso(now)}


def render_option_quote(symbol: str, now: datetime) -> JSON:
    """``OptionQuote`` for an OCC option symbol (fixed, plausible greeks)."""
    return {
        "symbol": symbol,
        "implied_volatility": 0.25,
        "synthetic_price": 2.5,
        "greeks": {"delta": 0.5, "gamma": 0.05, "theta": -0.02, "vega": 0.12},
        "timestamp": iso(now),
    }


def render_subscription(account_id: str, check_interval_seconds: int) -> JSON:
    """``TradeDetectionSubscription`` (the emulator charges nothing)."""
    return {"account_id": account_id, "check_interval_seconds": check_interval_seconds, "cost": "0.00"}


def render_partner_stats(stats: dict[str, Any], currency: str, now: datetime, *, legacy: bool) -> JSON:
    """``ConnectedAssetPartnerStats`` (``/management/stats``), or the older ``PartnerStats``."""
    assets = "assets_under_management" if legacy else "connected_assets"
    return {
        "total_users": stats["users"],
        "total_connected_users": stats["connected_users"],
        "total_active_connections": stats["active"],
        "total_disabled_connections": stats["disabled"],
        "oauth_total_users": 0,
        "oauth_total_connected_users": 0,
        "oauth_total_active_connections": 0,
        "oauth_total_disabled_connections": 0,
        assets: float(stats["value"]),
        f"disabled_{assets}": float(stats["disabled_value"]),
        f"oauth_{assets}": 0.0,
        f"oauth_disabled_{assets}": 0.0,
        f"{assets}_currency": currency,
        f"{assets}_calculated_at": iso(now),
    }
