"""The v2 / experimental order reads: the same order state as the v1 reads, in the newer formats."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_helpers import signed_request
from snaptrade_client.exceptions import ApiException

from aims_snaptrade.testing import ConnectedUser, RateLimit, SnapTradeEmulator


def _who(user: ConnectedUser) -> dict[str, str]:
    return {"user_id": user.user_id, "user_secret": user.user_secret}


def _api_error(call: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as exc:
        call(*args, **kwargs)
    body = exc.value.body
    assert isinstance(body, dict)
    return int(exc.value.status), str(body["code"])


def _v1(sdk: Any, user: ConnectedUser, **query: Any) -> list[dict[str, Any]]:
    account = user.account_ids[0]
    return list(sdk.account_information.get_user_account_orders(account_id=account, **query, **_who(user)).body)


def _v2(sdk: Any, user: ConnectedUser, **query: Any) -> list[dict[str, Any]]:
    account = user.account_ids[0]
    body = sdk.experimental_endpoints.get_user_account_orders_v2(account_id=account, **query, **_who(user)).body
    return list(body["orders"])


def _all(sdk: Any, user: ConnectedUser, **query: Any) -> dict[str, Any]:
    account = user.account_ids[0]
    return dict(sdk.experimental_endpoints.get_all_account_orders(account_id=account, **query, **_who(user)).body)


@pytest.mark.parametrize("state", ["all", "open", "executed"])
def test_v2_and_all_orders_list_what_v1_lists(sdk: Any, alice: ConnectedUser, state: str) -> None:
    v1 = _v1(sdk, alice, state=state, days=30)
    assert v1, "the self-directed account has orders in every state family"
    ids = [o["brokerage_order_id"] for o in v1]
    assert [o["brokerage_order_id"] for o in _v2(sdk, alice, state=state, days=30)] == ids
    assert [o["brokerage_order_id"] for o in _all(sdk, alice, state=state, days=30)["results"]] == ids


def test_days_window_is_shared(sdk: Any, alice: ConnectedUser) -> None:
    # Seeded orders were placed 2, 3, 5, 30 and 50 hours ago: a one-day window drops the last two.
    recent = [o["brokerage_order_id"] for o in _v1(sdk, alice, days=1)]
    assert len(recent) == 3
    assert [o["brokerage_order_id"] for o in _v2(sdk, alice, days=1)] == recent
    assert [o["brokerage_order_id"] for o in _all(sdk, alice, days=1)["results"]] == recent


def test_v2_record_translates_each_v1_field(sdk: Any, alice: ConnectedUser) -> None:
    v1 = {o["brokerage_order_id"]: o for o in _v1(sdk, alice)}
    for record in _v2(sdk, alice):
        old = v1[record["brokerage_order_id"]]
        assert record["status"] == old["status"]  # the record keeps the v1 status enum
        assert record["order_type"] == {"Market": "MARKET", "Limit": "LIMIT"}[old["order_type"]]
        assert record["time_in_force"] == old["time_in_force"].upper()
        assert record["price_effect"] == ("DEBIT" if old["action"] == "BUY" else "CREDIT")
        assert record["time_placed"] == old["time_placed"]
        assert record["limit_price"] == old["limit_price"]
        assert record["execution_price"] == old["execution_price"]
        [leg] = record["legs"]
        assert leg["action"] == old["action"]
        assert leg["instrument"]["symbol"] == old["universal_symbol"]["symbol"]
        assert leg["instrument"]["asset_type"] == "EQUITY"
        for field in ("total_quantity", "filled_quantity", "canceled_quantity"):
            assert leg[field] == old[field]
    statuses = {r["status"]: r["legs"][0]["status"] for r in _v2(sdk, alice)}
    # The leg uses the v2 enum, which has no ACCEPTED or PARTIAL.
    assert statuses == {
        "EXECUTED": "EXECUTED",
        "PARTIAL": "PARTIALLY_EXECUTED",
        "ACCEPTED": "PENDING",
        "CANCELED": "CANCELED",
        "REJECTED": "REJECTED",
    }


def test_all_orders_format(sdk: Any, alice: ConnectedUser) -> None:
    body = _all(sdk, alice)
    auth = sdk.connections.detail_brokerage_authorization(authorization_id=alice.authorization_id, **_who(alice)).body
    assert body["data_freshness"]["as_of"] == auth["updated_date"]
    v1 = {o["brokerage_order_id"]: o for o in _v1(sdk, alice)}
    for order in body["results"]:
        old = v1[order["brokerage_order_id"]]
        kind = order["order_type"]["kind"]
        if old["order_type"] == "Limit":
            assert order["order_type"] == {"kind": "limit", "limit_price": old["limit_price"]}
        else:
            assert order["order_type"] == {"kind": "market"}
        assert kind in ("limit", "market")
        assert order["open_quantity"] == old["open_quantity"]
        [leg] = order["legs"]
        # Instruments are the positions' kind-discriminated ones.
        assert leg["instrument"]["kind"] in ("stock", "etf")
        assert leg["instrument"]["id"] == old["universal_symbol"]["id"]
    assert {o["status"] for o in body["results"]} == {
        "EXECUTED",
        "PARTIALLY_EXECUTED",
        "PENDING",
        "CANCELED",
        "REJECTED",
    }


def test_new_orders_and_cancels_show_in_every_format(sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    placed = sdk.trading.place_force_order(
        account_id=account,
        action="SELL",
        symbol="AAPL",
        order_type="Limit",
        price=999.0,
        time_in_force="GTC",
        units=1.0,
        **_who(alice),
    ).body
    order_id = placed["brokerage_order_id"]
    detail = sdk.experimental_endpoints.get_user_account_order_detail_v2
    record = detail(account_id=account, brokerage_order_id=order_id, **_who(alice)).body
    assert (record["status"], record["legs"][0]["status"]) == ("ACCEPTED", "PENDING")
    assert record["price_effect"] == "CREDIT"
    assert record["limit_price"] == placed["limit_price"]
    newest = _all(sdk, alice, state="open")["results"][0]
    assert newest["brokerage_order_id"] == order_id
    assert newest["order_type"]["kind"] == "limit"
    assert newest["open_quantity"] == "1.0"

    sdk.trading.cancel_order(account_id=account, brokerage_order_id=order_id, **_who(alice))
    record = detail(account_id=account, brokerage_order_id=order_id, **_who(alice)).body
    assert (record["status"], record["legs"][0]["status"]) == ("CANCELED", "CANCELED")
    assert order_id not in [o["brokerage_order_id"] for o in _v2(sdk, alice, state="open")]
    canceled = next(o for o in _all(sdk, alice)["results"] if o["brokerage_order_id"] == order_id)
    assert (canceled["status"], canceled["canceled_quantity"], canceled["open_quantity"]) == ("CANCELED", "1.0", "0")


def test_unmapped_time_in_force_is_other_in_all_orders(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    order = {
        "account_id": alice.account_ids[0],
        "action": "BUY",
        "symbol": "KO",
        "order_type": "Market",
        "time_in_force": "Gtx",
        "units": 1,
    }
    params = {"userId": alice.user_id, "userSecret": alice.user_secret}
    assert signed_request(emu, "POST", "/trade/place", params=params, body=order).status == 200
    sdk = emu.sdk(retries=False)
    assert _v2(sdk, alice)[0]["time_in_force"] == "GTX"  # free text in the v2 record
    assert _all(sdk, alice)["results"][0]["time_in_force"] == "OTHER"  # a closed enum there


def test_recent_orders_v2_follow_v1(sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    for only_executed in (True, False):
        v1 = sdk.account_information.get_user_account_recent_orders(
            account_id=account, only_executed=only_executed, **_who(alice)
        ).body["orders"]
        v2 = sdk.experimental_endpoints.get_user_account_recent_orders_v2(
            account_id=account, only_executed=only_executed, **_who(alice)
        ).body["orders"]
        assert [o["brokerage_order_id"] for o in v2] == [o["brokerage_order_id"] for o in v1]
    # Default: only executed orders (as state=executed on /orders); the partly filled one is left out.
    default = sdk.experimental_endpoints.get_user_account_recent_orders_v2(account_id=account, **_who(alice)).body
    assert {o["status"] for o in default["orders"]} == {"EXECUTED"}


def test_order_detail_v2_unknown_or_foreign_is_404(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    detail = sdk.experimental_endpoints.get_user_account_order_detail_v2
    account = alice.account_ids[0]
    assert _api_error(detail, account_id=account, brokerage_order_id="no-such-order", **_who(alice)) == (404, "1011")
    bob = emu.connect("bob")
    bobs_order = _v1(sdk, bob)[0]["brokerage_order_id"]
    assert _api_error(detail, account_id=account, brokerage_order_id=bobs_order, **_who(alice)) == (404, "1011")
    assert _api_error(detail, account_id=bob.account_ids[0], brokerage_order_id=bobs_order, **_who(alice)) == (
        404,
        "1011",
    )


def test_invalid_state_and_days_are_400(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    params = {"userId": alice.user_id, "userSecret": alice.user_secret}
    for path in (f"/accounts/{alice.account_ids[0]}/orders/v2", f"/accounts/{alice.account_ids[0]}/orders/all"):
        assert signed_request(emu, "GET", path, params={**params, "state": "done"}).status == 400
        assert signed_request(emu, "GET", path, params={**params, "days": "0"}).status == 400
        assert signed_request(emu, "GET", path, params={**params, "days": "90"}).status == 200


def test_v2_reads_answer_425_while_populating(emu: SnapTradeEmulator, sdk: Any) -> None:
    user = emu.connect("fresh", populating_seconds=60)
    account = user.account_ids[0]
    reads = sdk.experimental_endpoints
    assert _api_error(reads.get_user_account_orders_v2, account_id=account, **_who(user)) == (425, "3012")
    assert _api_error(reads.get_user_account_recent_orders_v2, account_id=account, **_who(user)) == (425, "3012")
    assert _api_error(reads.get_all_account_orders, account_id=account, **_who(user)) == (425, "3012")
    emu.finish_populating(user.authorization_id)
    assert _v2(sdk, user)


def test_disabled_connection_keeps_serving_stale_orders(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    assert alice.authorization_id is not None
    before = (_v2(sdk, alice), _all(sdk, alice)["results"])
    emu.disable_connection(alice.authorization_id)
    assert (_v2(sdk, alice), _all(sdk, alice)["results"]) == before


def test_v1_and_v2_order_reads_share_the_account_bucket() -> None:
    with SnapTradeEmulator(account_rate_limit=RateLimit(4, 30.0)) as emu:
        user = emu.connect("limited")
        sdk = emu.sdk(retries=False)
        account = user.account_ids[0]
        order_id = _v1(sdk, user)[0]["brokerage_order_id"]  # 1
        reads = sdk.experimental_endpoints
        reads.get_user_account_orders_v2(account_id=account, **_who(user))  # 2
        reads.get_all_account_orders(account_id=account, **_who(user))  # 3
        last = reads.get_user_account_order_detail_v2(account_id=account, brokerage_order_id=order_id, **_who(user))
        assert last.headers["X-RateLimit-Account-Remaining"] == "0"  # 4
        with pytest.raises(ApiException) as exc:
            reads.get_user_account_recent_orders_v2(account_id=account, **_who(user))
        assert exc.value.status == 429
        assert exc.value.headers["X-RateLimit-Account-Remaining"] == "0"
        # Another account of the same user has its own bucket.
        assert reads.get_all_account_orders(account_id=user.account_ids[1], **_who(user)).status == 200
