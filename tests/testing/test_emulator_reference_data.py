"""Reference data, account updates, value history and rates of return."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import urllib3
from emulator_helpers import signed_request
from snaptrade_client.exceptions import ApiException

from aims_snaptrade.testing import ConnectedUser, RateLimit, Scenario, SnapTradeEmulator

CENT = Decimal("0.01")


def _who(user: ConnectedUser) -> dict[str, str]:
    return {"user_id": user.user_id, "user_secret": user.user_secret}


def _api_error(call: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as exc:
        call(*args, **kwargs)
    body = exc.value.body
    assert isinstance(body, dict)
    return int(exc.value.status), str(body["code"])


# --- signing as the SDK does it -----------------------------------------------------------------


def test_institutions_need_no_signature(emu: SnapTradeEmulator) -> None:
    http = urllib3.PoolManager(retries=False)
    bare = http.request("GET", f"{emu.base_url}/institutions")
    assert bare.status == 200
    assert bare.json()[0]["slug"] == "SANDBOX"
    # A signed request is fine too (the extra parameters are ignored), and both are journaled.
    assert signed_request(emu, "GET", "/institutions").status == 200
    assert emu.journal.count(operation="list_institutions", processed=True) == 2


def test_partner_info_needs_a_signature(emu: SnapTradeEmulator) -> None:
    http = urllib3.PoolManager(retries=False)
    response = http.request("GET", f"{emu.base_url}/snapTrade/partners")
    assert response.status == 401
    assert response.json()["code"] == "1076"


# --- reference data -----------------------------------------------------------------------------


def test_partner_info_describes_the_calling_key(emu: SnapTradeEmulator, sdk: Any) -> None:
    body = sdk.reference_data.get_partner_info().body
    assert body["slug"] == emu.client_id
    assert body["can_access_trades"] is True
    assert body["redirect_uri"] is None
    assert body["allowed_brokerages"] == sdk.reference_data.list_all_brokerages().body
    personal = emu.personal_credentials
    assert personal is not None
    assert emu.sdk(personal=True).reference_data.get_partner_info().body["slug"] == personal.client_id


def test_exchanges_cover_every_listed_symbol(sdk: Any) -> None:
    exchanges = sdk.reference_data.get_stock_exchanges().body
    by_mic = {e["mic_code"]: e for e in exchanges}
    assert len(by_mic) == len(exchanges)
    symbols = sdk.reference_data.get_symbols(substring="").body
    assert symbols
    for symbol in symbols:
        assert symbol["exchange"] == by_mic[symbol["exchange"]["mic_code"]]
    assert by_mic["XTSE"]["suffix"] == ".TO"
    assert by_mic["XNAS"]["suffix"] is None


def test_institutions_match_brokerages(sdk: Any) -> None:
    brokerages = {b["slug"]: b for b in sdk.reference_data.list_all_brokerages().body}
    institutions = sdk.reference_data.list_institutions().body
    assert [i["slug"] for i in institutions] == list(brokerages)
    for institution in institutions:
        brokerage = brokerages[institution["slug"]]
        expected = ["READ", "TRADE"] if brokerage["allows_trading"] else ["READ"]
        assert institution["connection"]["scopes"] == expected
        assert institution["logo_url"] == brokerage["aws_s3_logo_url"]
    paper = {i["slug"] for i in institutions if i["is_paper"]}
    assert paper == {"ALPACA-PAPER"}


def test_authorization_types_filter_by_brokerage(sdk: Any) -> None:
    every = sdk.reference_data.list_all_brokerage_authorization_type().body
    assert len({t["id"] for t in every}) == len(every)
    slugs = [b["slug"] for b in sdk.reference_data.list_all_brokerages().body]
    assert sorted({t["brokerage"]["slug"] for t in every}) == sorted(slugs)
    some = sdk.reference_data.list_all_brokerage_authorization_type(brokerage="alpaca, QUESTRADE").body
    assert [(t["brokerage"]["slug"], t["type"]) for t in some] == [
        ("ALPACA", "read"),
        ("ALPACA", "trade"),
        ("QUESTRADE", "read"),
    ]
    assert [t for t in every if t["brokerage"]["slug"] in ("ALPACA", "QUESTRADE")] == some
    assert sdk.reference_data.list_all_brokerage_authorization_type(brokerage="NOPE").body == []


def test_brokerage_instruments(sdk: Any) -> None:
    alpaca = sdk.reference_data.list_all_brokerage_instruments(slug="alpaca").body["instruments"]
    symbols = {s["symbol"]: s["id"] for s in sdk.reference_data.get_symbols(substring="").body}
    assert {i["symbol"]: i["universal_symbol_id"] for i in alpaca} == symbols
    assert all(i["tradeable"] is True for i in alpaca)
    questrade = sdk.reference_data.list_all_brokerage_instruments(slug="QUESTRADE").body["instruments"]
    assert all(i["tradeable"] is False for i in questrade)
    assert _api_error(sdk.reference_data.list_all_brokerage_instruments, slug="NOPE") == (404, "1011")


def test_reference_ids_are_stable_across_emulators() -> None:
    def ids(seed: int) -> Any:
        with SnapTradeEmulator(seed=seed) as emu:
            data = emu.sdk().reference_data
            return (
                [t["id"] for t in data.list_all_brokerage_authorization_type().body],
                [e["id"] for e in data.get_stock_exchanges().body],
            )

    assert ids(1) == ids(2)


# --- update_user_account ------------------------------------------------------------------------


def test_update_user_account_answers_the_account_as_a_list(sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[1]
    updated = sdk.account_information.update_user_account(account_id=account, **_who(alice)).body
    details = sdk.account_information.get_user_account_details(account_id=account, **_who(alice)).body
    assert updated == [details]
    unknown = "00000000-0000-0000-0000-000000000000"
    assert _api_error(sdk.account_information.update_user_account, account_id=unknown, **_who(alice)) == (
        404,
        "1011",
    )


def test_update_draws_on_the_account_bucket() -> None:
    with SnapTradeEmulator(account_rate_limit=RateLimit(2, 30.0)) as emu:
        user = emu.connect("u")
        sdk = emu.sdk(retries=False)
        account = user.account_ids[0]
        sdk.account_information.update_user_account(account_id=account, **_who(user))
        sdk.account_information.get_account_balance_history(account_id=account, **_who(user))
        rates = sdk.account_information.get_user_account_return_rates
        assert _api_error(rates, account_id=account, **_who(user)) == (429, "0000")


# --- value history and rates of return ----------------------------------------------------------


def _history(sdk: Any, user: ConnectedUser, account: str) -> list[tuple[date, Decimal]]:
    body = sdk.account_information.get_account_balance_history(account_id=account, **_who(user)).body
    assert body["currency"] == "USD"
    return [(date.fromisoformat(p["date"]), Decimal(p["total_value"])) for p in body["history"]]


def _rates(sdk: Any, user: ConnectedUser, account: str, **query: Any) -> dict[str, Decimal]:
    body = sdk.account_information.get_user_account_return_rates(account_id=account, **query, **_who(user)).body
    return {r["timeframe"]: Decimal(str(r["return_percent"])) for r in body["data"]}


def _net_value(sdk: Any, user: ConnectedUser, account: str) -> Decimal:
    body = sdk.account_information.get_account_balances_v2(account_id=account, **_who(user)).body
    return Decimal(body["net_value"]["amount"]).quantize(CENT, rounding=ROUND_HALF_UP)


def _percent(now: Decimal, then: Decimal) -> Decimal:
    return ((now / then - 1) * 100).quantize(CENT, rounding=ROUND_HALF_UP)


def test_balance_history_is_a_year_of_days_ending_at_the_current_value(sdk: Any, alice: ConnectedUser) -> None:
    for account in alice.account_ids:
        history = _history(sdk, alice, account)
        today = datetime.now(UTC).date()
        assert len(history) == 366
        assert [d for d, _ in history] == [today - timedelta(days=k) for k in range(365, -1, -1)]
        assert history[-1][1] == _net_value(sdk, alice, account)
        assert all(value > 0 for _, value in history)
        assert len({value for _, value in history}) > 300  # it moves


def test_return_rates_are_computed_from_the_history(sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    history = dict(_history(sdk, alice, account))
    rates = _rates(sdk, alice, account)
    assert list(rates) == ["ALL", "1Y", "YTD", "1M", "1W", "1D"]
    today = max(history)
    now = history[today]
    assert rates["1D"] == _percent(now, history[today - timedelta(days=1)])
    assert rates["1W"] == _percent(now, history[today - timedelta(days=7)])
    assert rates["1M"] == _percent(now, history[today - timedelta(days=30)])
    assert rates["1Y"] == _percent(now, history[today - timedelta(days=365)])
    assert rates["YTD"] == _percent(now, history[date(today.year, 1, 1)])


def test_timeframes_can_be_chosen(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    every = _rates(sdk, alice, account)
    assert _rates(sdk, alice, account, timeframes="1d, all") == {"ALL": every["ALL"], "1D": every["1D"]}
    status, code = _api_error(
        sdk.account_information.get_user_account_return_rates, account_id=account, timeframes="5Y", **_who(alice)
    )
    assert (status, code) == (400, "1012")
    params = {"userId": alice.user_id, "userSecret": alice.user_secret, "timeframes": "ALL,2W"}
    response = signed_request(emu, "GET", f"/authorizations/{alice.authorization_id}/returnRates", params=params)
    assert response.status == 400
    assert "2W" in response.json()["detail"]


def test_histories_are_deterministic_per_seed() -> None:
    def snapshot(seed: int) -> Any:
        with SnapTradeEmulator(seed=seed) as emu:
            user = emu.connect("det")
            sdk = emu.sdk()
            return _history(sdk, user, user.account_ids[0]), _rates(sdk, user, user.account_ids[1])

    assert snapshot(3) == snapshot(3)
    first, second = snapshot(3), snapshot(4)
    assert first[0][-1] == second[0][-1]  # both end at the same current value...
    assert first[0][0] != second[0][0]  # ...after a different year


def test_connection_rates_weigh_account_rates_by_value(sdk: Any, alice: ConnectedUser) -> None:
    combined = sdk.connections.return_rates(authorization_id=alice.authorization_id, **_who(alice)).body
    overall = {r["timeframe"]: Decimal(str(r["return_percent"])) for r in combined["data"]}
    values = {a: _net_value(sdk, alice, a) for a in alice.account_ids}
    per_account = {a: _rates(sdk, alice, a) for a in alice.account_ids}
    total = sum(values.values(), Decimal(0))
    for timeframe, rate in overall.items():
        expected = sum(per_account[a][timeframe] * values[a] for a in alice.account_ids) / total
        assert rate == expected.quantize(CENT, rounding=ROUND_HALF_UP), timeframe


def test_accounts_without_positive_value_have_flat_history(emu: SnapTradeEmulator, sdk: Any) -> None:
    user = emu.connect("kinds", scenario=Scenario.ALL_ACCOUNT_KINDS)
    accounts = sdk.account_information.list_all_user_accounts(**_who(user)).body["results"]
    credit = next(a["id"] for a in accounts if a["kind"] == "line_of_credit")
    history = _history(sdk, user, credit)
    assert {value for _, value in history} == {Decimal("-1250.00")}
    assert set(_rates(sdk, user, credit).values()) == {Decimal(0)}


def test_history_and_rates_answer_425_while_populating(emu: SnapTradeEmulator, sdk: Any) -> None:
    user = emu.connect("fresh", populating_seconds=60)
    account = user.account_ids[0]
    info = sdk.account_information
    assert _api_error(info.get_account_balance_history, account_id=account, **_who(user)) == (425, "3012")
    assert _api_error(info.get_user_account_return_rates, account_id=account, **_who(user)) == (425, "3012")
    returns = sdk.connections.return_rates
    assert _api_error(returns, authorization_id=user.authorization_id, **_who(user)) == (425, "3012")
    emu.finish_populating(user.authorization_id)
    assert returns(authorization_id=user.authorization_id, **_who(user)).status == 200


def test_foreign_connection_rates_are_404(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    bob = emu.connect("bob")
    returns = sdk.connections.return_rates
    assert _api_error(returns, authorization_id=bob.authorization_id, **_who(alice)) == (404, "1011")
