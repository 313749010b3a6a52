"""Result models: lenient where SnapTrade is, exact where money is."""

from __future__ import annotations

from decimal import Decimal

from aims_snaptrade.models import Account, Activity, Balance, Position


def test_unknown_enum_values_and_fields_are_kept_not_rejected():
    account = Account.from_api(
        {"id": "a1", "kind": "crypto_wallet", "net_value": {"amount": 10.1, "currency": "USD"}, "brand_new": {"x": 1}}
    )
    assert account.kind == "crypto_wallet"
    assert account.model_extra == {"net_value": {"amount": 10.1, "currency": "USD"}, "brand_new": {"x": 1}}
    activity = Activity.from_api({"id": "t1", "type": "STAKING_REWARD", "amount": None, "symbol": None})
    assert activity.type == "STAKING_REWARD"
    assert activity.amount is None


def test_money_is_exact_decimal_from_floats_and_strings():
    balance = Balance.model_validate({"currency": {"code": "CAD", "id": "x"}, "cash": 0.1, "buying_power": "1e3"})
    assert balance.cash == Decimal("0.1")  # not 0.1000000000000000055511151231257827
    assert balance.buying_power == Decimal("1000")
    assert balance.currency == "CAD"
    position = Position.from_api({"instrument": {"symbol": "AAPL", "kind": "stock"}, "units": "0.00012", "price": None})
    assert position.units == Decimal("0.00012") and position.price is None and position.symbol == "AAPL"


def test_nullable_everything_but_the_id():
    assert Account.from_api({"id": "a"}).net_value_amount is None
    assert Position.from_api({}).symbol is None
