"""Result models: lenient where SnapTrade is, exact where money is."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade.models import Account, Activity, Balance, Position


def test_unknown_enum_values_and_fields_are_kept_not_rejected():
    account = Account.from_api(
        {"id": "a1", "kind": "crypto_wallet", "net_value": {"amount": 10.1, "currency": "USD"}, "brand_new": {"x": 1}}
    )
    assert account.kind == "crypto_wallet"
    assert account.raw == {
        "id": "a1",
        "kind": "crypto_wallet",
        "net_value": {"amount": 10.1, "currency": "USD"},
        "brand_new": {"x": 1},
    }
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


_ANSWERS = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=8),
        "net_value": st.fixed_dictionaries(
            {
                "amount": st.floats(allow_nan=False, allow_infinity=False, width=64),
                "currency": st.sampled_from(["USD", "CAD"]),
            }
        ),
    },
    optional={"brand_new": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3), "is_paper": st.booleans()},
)


@settings(max_examples=80, deadline=None)
@given(_ANSWERS)
def test_a_dump_carries_the_typed_fields_only_and_the_answer_stays_under_raw(answer):
    account = Account.from_api(answer)
    dumped = account.model_dump(mode="json")
    assert set(dumped) == set(Account.model_fields)  # no SDK field beside the typed ones
    assert dumped["net_value_amount"] == str(Decimal(repr(answer["net_value"]["amount"])))  # a decimal string
    assert isinstance(account.model_dump()["net_value_amount"], Decimal)
    assert account.raw == answer and "brand_new" not in dumped
    with pytest.raises(TypeError):
        account.raw["id"] = "changed"  # type: ignore[index]
    again = Account.model_validate_json(account.model_dump_json())
    assert again == account and again.raw == {}  # equal on typed fields; a dump carries no answer


def test_every_builder_keeps_its_answer():
    answers = {
        Position: {"instrument": {"symbol": "AAPL", "kind": "stock"}, "units": 1.5, "extra": 1},
        Activity: {"id": "t1", "symbol": {"symbol": "AAPL"}, "amount": 10.25, "extra": 2},
    }
    for model, answer in answers.items():
        built = model.from_api(answer)
        assert built.raw == answer and "extra" not in built.model_dump()
    balance = Balance.from_answer({"currency": "USD", "cash": 0.1, "odd": True})
    assert balance.raw["cash"] == 0.1 and balance.model_dump(mode="json") == {
        "currency": "USD",
        "cash": "0.1",
        "buying_power": None,
    }
