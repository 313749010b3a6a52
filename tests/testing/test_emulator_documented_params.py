"""Parameters and answers exactly as SnapTrade's public reference documents them.

Each test names the documented rule it pins (api.yaml / the SDK's own docstrings): required and
optional parameters, what a missing or malformed one answers, caps and defaults, and the fields
of the documented examples. Calls go through the raw SDK where it can express the request, and
through hand-signed requests where the SDK would refuse it before sending.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import urllib3
from emulator_helpers import signed_request
from snaptrade_client.exceptions import ApiException

from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator, sign


def _who(user: ConnectedUser) -> dict[str, str]:
    return {"user_id": user.user_id, "user_secret": user.user_secret}


def _query(user: ConnectedUser) -> dict[str, str]:
    return {"userId": user.user_id, "userSecret": user.user_secret}


def _error(response: urllib3.BaseHTTPResponse) -> tuple[int, str]:
    """(status, code) of an error answer, after checking SnapTrade's error body shape."""
    body = response.json()
    assert set(body) == {"detail", "status_code", "code"}
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["code"], str)
    assert body["status_code"] == response.status
    assert response.headers["X-Request-ID"]
    return response.status, body["code"]


# --- users --------------------------------------------------------------------------------------


def test_delete_user_requires_user_id_and_answers_the_documented_body(emu: SnapTradeEmulator, sdk: Any) -> None:
    # userId is a required query parameter: leaving it out is a bad request, not an unknown user.
    assert _error(signed_request(emu, "DELETE", "/snapTrade/deleteUser")) == (400, "1012")
    assert _error(signed_request(emu, "DELETE", "/snapTrade/deleteUser", params={"userId": "nobody"})) == (404, "1011")
    sdk.authentication.register_snap_trade_user(user_id="gone")
    answer = sdk.authentication.delete_snap_trade_user(user_id="gone")
    assert answer.status == 200
    assert answer.body == {
        "status": "deleted",
        "detail": "User queued for deletion; please wait for webhook for confirmation.",
        "userId": "gone",
    }


def test_reset_user_secret_takes_both_credentials_in_the_body(emu: SnapTradeEmulator, sdk: Any) -> None:
    secret = sdk.authentication.register_snap_trade_user(user_id="r").body["userSecret"]
    path = "/snapTrade/resetUserSecret"
    assert _error(signed_request(emu, "POST", path, body={"userId": "r"})) == (400, "1012")
    assert _error(signed_request(emu, "POST", path, body={"userSecret": secret})) == (400, "1012")
    # In the query string (where other user calls carry them) they do not count.
    assert _error(signed_request(emu, "POST", path, params={"userId": "r", "userSecret": secret})) == (400, "1012")
    assert _error(signed_request(emu, "POST", path, body={"userId": "r", "userSecret": "wrong"})) == (401, "1083")
    rotated = sdk.authentication.reset_snap_trade_user_secret(user_id="r", user_secret=secret)
    assert rotated.status == 200
    assert set(rotated.body) == {"userId", "userSecret"}
    assert rotated.body["userId"] == "r"
    assert rotated.body["userSecret"] != secret


def test_list_users_is_a_flat_list_of_ids(sdk: Any) -> None:
    assert sdk.authentication.list_snap_trade_users().body == []
    for user_id in ("u1", "u2"):
        registered = sdk.authentication.register_snap_trade_user(user_id=user_id)
        assert registered.status == 200  # 200, not 201, as documented
        assert set(registered.body) == {"userId", "userSecret"}
    assert sdk.authentication.list_snap_trade_users().body == ["u1", "u2"]


# --- login (Connection Portal link) ---------------------------------------------------------------


def test_login_needs_no_body_and_defaults_to_a_read_v4_portal(emu: SnapTradeEmulator, sdk: Any) -> None:
    secret = sdk.authentication.register_snap_trade_user(user_id="p").body["userSecret"]
    login = sdk.authentication.login_snap_trade_user(user_id="p", user_secret=secret)
    assert login.status == 200
    assert set(login.body) == {"redirectURI", "sessionId"}
    query = parse_qs(urlsplit(login.body["redirectURI"]).query)
    assert query["connectionType"] == ["read"]
    assert query["connectionPortalVersion"] == ["v4"]
    assert query["sessionId"] == [login.body["sessionId"]]
    assert emu.state.session(login.body["sessionId"]) is not None


@pytest.mark.parametrize("version", ["v2", "v3", "v4"])
def test_deprecated_portal_versions_are_served_as_v4(sdk: Any, alice: ConnectedUser, version: str) -> None:
    login = sdk.authentication.login_snap_trade_user(connection_portal_version=version, **_who(alice)).body
    assert parse_qs(urlsplit(login["redirectURI"]).query)["connectionPortalVersion"] == ["v4"]


@pytest.mark.parametrize(
    ("locale", "rendered"), [("en", "en"), ("en-US", "en"), ("pt-BR", "pt-BR"), ("pt_br", "pt-BR"), ("PT-br", "pt-BR")]
)
def test_login_accepts_every_spelling_of_a_shipped_locale(
    emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser, locale: str, rendered: str
) -> None:
    login = sdk.authentication.login_snap_trade_user(locale=locale, **_who(alice)).body
    page = urllib3.PoolManager(retries=False).request("GET", login["redirectURI"])
    assert page.status == 200
    assert f'<html lang="{rendered}">' in page.data.decode()


@pytest.mark.parametrize("locale", ["fr", "de-DE", "pt", "pt-PT"])
def test_login_rejects_languages_that_are_not_shipped(sdk: Any, alice: ConnectedUser, locale: str) -> None:
    with pytest.raises(ApiException) as exc:
        sdk.authentication.login_snap_trade_user(locale=locale, **_who(alice))
    assert exc.value.status == 400
    assert exc.value.body["code"] == "1012"


@pytest.mark.parametrize(
    "body",
    [
        {"connectionType": "write"},
        {"connectionPortalVersion": "v9"},
        {"immediateRedirect": "yes"},
        {"darkMode": 1},
        {"showCloseButton": "false"},
        {"customRedirect": 42},
    ],
)
def test_login_rejects_malformed_fields(emu: SnapTradeEmulator, alice: ConnectedUser, body: dict[str, Any]) -> None:
    # The SDK refuses these before sending; a raw client gets SnapTrade's 400.
    assert _error(signed_request(emu, "POST", "/snapTrade/login", params=_query(alice), body=body)) == (400, "1012")


def test_login_with_every_documented_field(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    login = sdk.authentication.login_snap_trade_user(
        broker="ALPACA",
        immediate_redirect=True,
        custom_redirect="https://partner.example/back",
        connection_type="trade-if-available",
        show_close_button=False,
        dark_mode=True,
        locale="en",
        connection_portal_version="v4",
        **_who(alice),
    ).body
    query = parse_qs(urlsplit(login["redirectURI"]).query)
    assert query["broker"] == ["ALPACA"]
    session = emu.state.session(login["sessionId"])
    assert session is not None
    assert (session.connection_type, session.custom_redirect) == ("trade-if-available", "https://partner.example/back")


# --- orders ---------------------------------------------------------------------------------------


def test_order_days_above_90_are_capped_not_refused(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    account = emu.state.get_account(alice.account_ids[0])
    with emu.state.lock:
        old = account.orders[0]
        old.time_placed = datetime.now(UTC) - timedelta(days=100)
    path = f"/accounts/{account.id}/orders"
    listed = {}
    for days in ("90", "120", "365"):
        response = signed_request(emu, "GET", path, params={**_query(alice), "days": days})
        assert response.status == 200
        listed[days] = [o["brokerage_order_id"] for o in response.json()]
    assert old.brokerage_order_id not in listed["120"]  # 120 means 90: a 100-day-old order is out
    assert listed["90"] == listed["120"] == listed["365"]
    assert _error(signed_request(emu, "GET", path, params={**_query(alice), "days": "0"})) == (400, "1012")


def test_only_executed_defaults_to_true_and_must_be_a_boolean(
    emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser
) -> None:
    account = alice.account_ids[0]
    default = sdk.account_information.get_user_account_recent_orders(account_id=account, **_who(alice)).body
    everything = sdk.account_information.get_user_account_recent_orders(
        account_id=account, only_executed=False, **_who(alice)
    ).body
    assert default["orders"]
    assert all(o["status"] == "EXECUTED" for o in default["orders"])
    assert {o["status"] for o in everything["orders"]} - {"EXECUTED"}  # the seed has a partly filled one
    path = f"/accounts/{account}/recentOrders"
    response = signed_request(emu, "GET", path, params={**_query(alice), "only_executed": "maybe"})
    assert _error(response) == (400, "1012")


def test_recent_orders_answer_the_latest_page_of_100(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    user = emu.state.find_user(emu.client_id, alice.user_id)
    assert user is not None
    account = alice.account_ids[0]
    order = {"account_id": account, "action": "BUY", "symbol": "KO", "order_type": "Limit", "price": 1.0}
    placed = [emu.state.place_order(user, {**order, "time_in_force": "Day", "units": 1}) for _ in range(105)]
    for operation in (
        sdk.account_information.get_user_account_recent_orders,
        sdk.experimental_endpoints.get_user_account_recent_orders_v2,
    ):
        listed = operation(account_id=account, only_executed=False, **_who(alice))
        ids = [o["brokerage_order_id"] for o in listed.body["orders"]]
        assert len(ids) == 100
        assert placed[-1].brokerage_order_id in ids  # newest first: the oldest ones fall off the page


def test_v1_order_records_carry_the_complex_order_group_id(sdk: Any, alice: ConnectedUser) -> None:
    orders = sdk.account_information.get_user_account_orders(account_id=alice.account_ids[0], **_who(alice)).body
    assert orders
    assert all("brokerage_group_order_id" in o and o["brokerage_group_order_id"] is None for o in orders)


def test_order_impact_requires_a_universal_symbol_id(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    # /trade/place takes a ticker in ``symbol``; the impact form has no such field.
    order = {
        "account_id": alice.account_ids[0],
        "action": "BUY",
        "symbol": "AAPL",
        "order_type": "Market",
        "time_in_force": "Day",
        "units": 1.0,
    }
    assert _error(signed_request(emu, "POST", "/trade/impact", params=_query(alice), body=order)) == (400, "1012")
    assert signed_request(emu, "POST", "/trade/place", params=_query(alice), body=order).status == 200


# --- quotes and activities -------------------------------------------------------------------------


def test_quotes_need_between_one_and_ten_symbols(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    path = f"/accounts/{account}/quotes"
    assert _error(signed_request(emu, "GET", path, params=_query(alice))) == (400, "1012")
    eleven = ",".join(["AAPL"] * 11)
    response = signed_request(emu, "GET", path, params={**_query(alice), "symbols": eleven, "use_ticker": "true"})
    assert _error(response) == (400, "1012")
    ten = sdk.trading.get_user_account_quotes(
        account_id=account, symbols=",".join(["AAPL"] * 10), use_ticker=True, **_who(alice)
    )
    assert len(ten.body) == 10


def test_activity_dates_are_inclusive(sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    everything = sdk.account_information.get_account_activities(account_id=account, **_who(alice)).body["data"]
    day = everything[len(everything) // 2]["trade_date"][:10]
    on_day = [a["id"] for a in everything if a["trade_date"][:10] == day]
    same_day = sdk.account_information.get_account_activities(
        account_id=account, start_date=day, end_date=day, **_who(alice)
    ).body
    assert [a["id"] for a in same_day["data"]] == on_day
    assert same_day["pagination"]["total"] == len(on_day)


# --- signatures ------------------------------------------------------------------------------------


def test_an_empty_json_body_is_signed_as_null_content(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    # FACTS: ``content`` is null for no body *or* ``{}``; a signature over ``{}`` itself is another string.
    raw_query = urlencode({**_query(alice), "clientId": emu.client_id, "timestamp": str(int(time.time()))})
    url = f"{emu.base_url}/snapTrade/login?{raw_query}"
    http = urllib3.PoolManager(retries=False)
    headers = {"Content-Type": "application/json"}
    for sign_path in ("/snapTrade/login", "/api/v1/snapTrade/login"):
        signature = sign(emu.consumer_key, sign_path, raw_query, None)
        for body in (b"{}", None):
            answer = http.request("POST", url, body=body, headers={**headers, "Signature": signature})
            assert answer.status == 200, (sign_path, body)


# --- symbol search ---------------------------------------------------------------------------------


def test_symbol_search_matches_a_substring_of_ticker_or_name(sdk: Any, alice: ConnectedUser) -> None:
    by_ticker = [s["symbol"] for s in sdk.reference_data.get_symbols(substring="aap").body]
    assert by_ticker == ["AAPL"]
    by_name = {s["symbol"] for s in sdk.reference_data.get_symbols(substring="apple").body}
    assert by_name == {"AAPL"}
    everything = sdk.reference_data.get_symbols().body
    assert len(everything) > 1
    in_account = sdk.reference_data.symbol_search_user_account(
        account_id=alice.account_ids[0], substring="AAP", **_who(alice)
    ).body
    assert [s["symbol"] for s in in_account] == ["AAPL"]
    assert sdk.reference_data.get_symbols(substring="no such thing").body == []
