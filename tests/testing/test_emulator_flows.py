"""Users, the Connection Portal, connections, Sandbox scenarios, account data and orders."""

from __future__ import annotations

import time
from typing import Any

import pytest
import urllib3
from emulator_helpers import signed_request
from snaptrade_client.exceptions import ApiException

from aims_snaptrade.testing import ConnectedUser, ConnectionPortalError, Scenario, SnapTradeEmulator


def _who(user: ConnectedUser) -> dict[str, str]:
    return {"user_id": user.user_id, "user_secret": user.user_secret}


def _api_error(call: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as exc:
        call(*args, **kwargs)
    body = exc.value.body
    assert isinstance(body, dict)
    assert body["status_code"] == exc.value.status
    return int(exc.value.status), str(body["code"])


# --- users --------------------------------------------------------------------------------------


def test_second_registration_gets_1010(sdk: Any) -> None:
    sdk.authentication.register_snap_trade_user(user_id="dup")
    assert _api_error(sdk.authentication.register_snap_trade_user, user_id="dup") == (400, "1010")


def test_list_delete_and_reset_users(sdk: Any) -> None:
    a = sdk.authentication.register_snap_trade_user(user_id="a").body
    sdk.authentication.register_snap_trade_user(user_id="b")
    assert sdk.authentication.list_snap_trade_users().body == ["a", "b"]

    rotated = sdk.authentication.reset_snap_trade_user_secret(user_id="a", user_secret=a["userSecret"]).body
    assert rotated["userId"] == "a"
    assert rotated["userSecret"] != a["userSecret"]
    assert sdk.account_information.list_all_user_accounts(user_id="a", user_secret=rotated["userSecret"]).status == 200
    assert _api_error(sdk.account_information.list_all_user_accounts, user_id="a", user_secret=a["userSecret"]) == (
        401,
        "1083",
    )

    deleted = sdk.authentication.delete_snap_trade_user(user_id="a").body
    assert deleted["status"] == "deleted"
    assert deleted["userId"] == "a"
    assert sdk.authentication.list_snap_trade_users().body == ["b"]
    assert _api_error(sdk.authentication.delete_snap_trade_user, user_id="a") == (404, "1011")


def test_deleting_a_user_deletes_its_connections(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    sdk.authentication.delete_snap_trade_user(user_id=alice.user_id)
    assert emu.state.all_authorizations() == []
    # A new user with the same id starts empty.
    again = sdk.authentication.register_snap_trade_user(user_id=alice.user_id).body
    listing = sdk.account_information.list_all_user_accounts(user_id=alice.user_id, user_secret=again["userSecret"])
    assert listing.body == {"results": []}


# --- connection portal --------------------------------------------------------------------------


def test_login_then_complete_connection(emu: SnapTradeEmulator, sdk: Any) -> None:
    secret = sdk.authentication.register_snap_trade_user(user_id="p").body["userSecret"]
    login = sdk.authentication.login_snap_trade_user(user_id="p", user_secret=secret, connection_type="read").body
    assert login["redirectURI"].startswith(emu.root_url + "/portal/")
    assert login["sessionId"] in login["redirectURI"]
    connection_id = emu.complete_connection(login["redirectURI"], brokerage="QUESTRADE")
    detail = sdk.connections.detail_brokerage_authorization(
        authorization_id=connection_id, user_id="p", user_secret=secret
    ).body
    assert detail["brokerage"]["slug"] == "QUESTRADE"
    assert detail["type"] == "read"
    assert detail["disabled"] is False
    with pytest.raises(ConnectionPortalError) as exc:
        emu.complete_connection(login["sessionId"])
    assert exc.value.reason == "session_used"


def test_portal_links_expire() -> None:
    with SnapTradeEmulator(portal_link_ttl_seconds=0.1) as emu:
        user = emu.create_user("late")
        login = emu.sdk().authentication.login_snap_trade_user(user_id="late", user_secret=user.user_secret).body
        time.sleep(0.15)
        with pytest.raises(ConnectionPortalError) as exc:
            emu.complete_connection(login["redirectURI"])
        assert exc.value.reason == "session_expired"


def test_portal_page_and_custom_redirect(emu: SnapTradeEmulator, sdk: Any) -> None:
    secret = sdk.authentication.register_snap_trade_user(user_id="web").body["userSecret"]
    login = sdk.authentication.login_snap_trade_user(
        user_id="web", user_secret=secret, custom_redirect="https://app.example/done", immediate_redirect=True
    ).body
    http = urllib3.PoolManager(retries=False)
    page = http.request("GET", login["redirectURI"])
    assert page.status == 200
    assert b"self_directed" in page.data
    # immediateRedirect: straight back to customRedirect, without the finish screen
    done = http.request("GET", f"{emu.root_url}/portal/{login['sessionId']}/connect?scenario=cash_only", redirect=False)
    assert done.status == 302
    location = done.headers["Location"]
    assert location.startswith("https://app.example/done?status=SUCCESS&connection_id=")
    connection_id = location.rsplit("=", 1)[1]
    accounts = sdk.connections.list_brokerage_authorization_accounts(
        authorization_id=connection_id, user_id="web", user_secret=secret
    ).body
    assert [a["name"] for a in accounts] == ["Cash Account"]


@pytest.mark.parametrize("scenario", [Scenario.INVALID_CREDENTIALS, Scenario.ACCOUNT_LOCKED, Scenario.RATE_LIMITED])
def test_failing_scenarios_create_no_connection(emu: SnapTradeEmulator, scenario: Scenario) -> None:
    user = emu.create_user("unlucky")
    login = emu.sdk().authentication.login_snap_trade_user(user_id="unlucky", user_secret=user.user_secret).body
    with pytest.raises(ConnectionPortalError) as exc:
        emu.complete_connection(login["redirectURI"], scenario=scenario)
    assert exc.value.reason == scenario.value
    assert emu.state.all_authorizations() == []
    # The link stays usable: the user can try again.
    assert emu.complete_connection(login["redirectURI"], scenario=Scenario.NO_ACCOUNTS)


def test_login_with_unknown_reconnect_target_is_404(sdk: Any, alice: ConnectedUser) -> None:
    assert _api_error(
        sdk.authentication.login_snap_trade_user, reconnect="00000000-0000-0000-0000-000000000000", **_who(alice)
    ) == (404, "1011")


# --- scenarios and account data -----------------------------------------------------------------


def _accounts(sdk: Any, user: ConnectedUser) -> list[dict[str, Any]]:
    return list(sdk.account_information.list_all_user_accounts(**_who(user)).body["results"])


def test_self_directed_scenario(sdk: Any, alice: ConnectedUser) -> None:
    accounts = _accounts(sdk, alice)
    assert [a["display_name"] for a in accounts] == ["Individual Brokerage", "Roth IRA"]
    assert all(a["kind"] == "investment" for a in accounts)
    positions = sdk.account_information.get_all_account_positions(account_id=alice.account_ids[0], **_who(alice)).body
    assert sorted(p["instrument"]["symbol"] for p in positions["results"]) == ["AAPL", "MSFT", "TSLA", "VTI"]
    balances = sdk.account_information.get_user_account_balance(account_id=alice.account_ids[0], **_who(alice)).body
    assert balances == [
        {"currency": balances[0]["currency"], "cash": 12500.0, "buying_power": 25000.0},
    ]
    orders = sdk.account_information.get_user_account_orders(account_id=alice.account_ids[0], **_who(alice)).body
    assert {o["status"] for o in orders} == {"EXECUTED", "PARTIAL", "ACCEPTED", "CANCELED", "REJECTED"}


def test_scenarios_accept_portal_labels(emu: SnapTradeEmulator) -> None:
    assert Scenario("Self-directed") is Scenario.SELF_DIRECTED
    assert Scenario("cash only") is Scenario.CASH_ONLY
    assert Scenario("NO_ACCOUNTS") is Scenario.NO_ACCOUNTS
    with pytest.raises(ValueError):
        Scenario("nonsense")
    assert emu.connect("labels", scenario="No transactions").account_ids


@pytest.mark.parametrize(
    ("scenario", "names", "has_positions", "has_activities"),
    [
        (Scenario.CASH_ONLY, ["Cash Account"], False, True),
        (Scenario.NO_TRANSACTIONS, ["Individual Brokerage", "Roth IRA"], True, False),
        (Scenario.NO_ACCOUNTS, [], False, False),
    ],
)
def test_other_data_scenarios(
    emu: SnapTradeEmulator, sdk: Any, scenario: Scenario, names: list[str], has_positions: bool, has_activities: bool
) -> None:
    user = emu.connect("s", scenario=scenario)
    assert [a["display_name"] for a in _accounts(sdk, user)] == names
    assert user.authorization_id in [a["id"] for a in sdk.connections.list_brokerage_authorizations(**_who(user)).body]
    for account_id in user.account_ids:
        positions = sdk.account_information.get_all_account_positions(account_id=account_id, **_who(user)).body
        activities = sdk.account_information.get_account_activities(account_id=account_id, **_who(user)).body
        assert bool(positions["results"]) is has_positions
        assert bool(activities["data"]) is has_activities


def test_portfolios_are_deterministic_per_seed() -> None:
    def snapshot(seed: int) -> Any:
        with SnapTradeEmulator(seed=seed) as emu:
            user = emu.connect("det")
            sdk = emu.sdk()
            accounts = _accounts(sdk, user)
            activities = sdk.account_information.get_account_activities(
                account_id=user.account_ids[1], **_who(user), limit=5
            ).body
            return [(a["id"], a["institution_account_id"]) for a in accounts], [
                (x["id"], x["type"], x["amount"], x["trade_date"]) for x in activities["data"]
            ]

    assert snapshot(7) == snapshot(7)
    assert snapshot(7)[0] != snapshot(8)[0]


def test_activities_are_paginated_up_to_1000(sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    first = sdk.account_information.get_account_activities(account_id=account, **_who(alice)).body
    assert first["pagination"] == {"offset": 0, "limit": 1000, "total": 1200}
    assert len(first["data"]) == 1000
    capped = sdk.account_information.get_account_activities(account_id=account, limit=5000, **_who(alice)).body
    assert capped["pagination"]["limit"] == 1000
    seen: list[str] = []
    offset = 0
    while True:
        page = sdk.account_information.get_account_activities(
            account_id=account, offset=offset, limit=500, **_who(alice)
        ).body
        seen.extend(a["id"] for a in page["data"])
        offset += len(page["data"])
        if offset >= page["pagination"]["total"] or not page["data"]:
            break
    assert len(seen) == len(set(seen)) == 1200
    dates = [a["trade_date"] for a in first["data"]]
    assert dates == sorted(dates, reverse=True)


def test_activity_filters(sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    body = sdk.account_information.get_account_activities(
        account_id=account, start_date="2026-01-01", end_date="2026-03-31", type="DIVIDEND,BUY", **_who(alice)
    ).body
    assert body["data"]
    assert {a["type"] for a in body["data"]} <= {"DIVIDEND", "BUY"}
    assert all("2026-01-01" <= a["trade_date"][:10] <= "2026-03-31" for a in body["data"])
    assert body["pagination"]["total"] == len(body["data"])


def test_activities_on_the_legacy_prefix_carry_the_deprecation_header(
    emu: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    params = {"userId": alice.user_id, "userSecret": alice.user_secret, "limit": "1"}
    response = signed_request(emu, "GET", f"/accounts/{alice.account_ids[1]}/activities", params=params)
    assert response.headers["Deprecation"] == "@1781222400"


def test_unknown_and_foreign_accounts_are_404(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    bob = emu.connect("bob")
    assert _api_error(
        sdk.account_information.get_user_account_balance, account_id=bob.account_ids[0], **_who(alice)
    ) == (404, "1011")
    assert _api_error(
        sdk.account_information.get_user_account_details,
        account_id="00000000-0000-0000-0000-000000000000",
        **_who(alice),
    ) == (404, "1011")


def test_holdings_retired_for_apps_registered_after_the_sunset() -> None:
    with SnapTradeEmulator(legacy_holdings_retired=True) as emu:
        user = emu.connect("late-app")
        sdk = emu.sdk(retries=False)
        status, _ = _api_error(sdk.account_information.get_user_holdings, account_id=user.account_ids[0], **_who(user))
        assert status == 410
        assert (
            sdk.account_information.get_all_account_positions(account_id=user.account_ids[0], **_who(user)).status
            == 200
        )


def test_holdings_served_by_default(sdk: Any, alice: ConnectedUser) -> None:
    body = sdk.account_information.get_user_holdings(account_id=alice.account_ids[0], **_who(alice)).body
    assert len(body["positions"]) == 4
    assert body["account"]["id"] == alice.account_ids[0]


# --- populating and broken connections ----------------------------------------------------------


def test_new_connection_answers_425_while_populating(emu: SnapTradeEmulator, sdk: Any) -> None:
    user = emu.connect("fresh", populating_seconds=60)
    account = user.account_ids[0]
    assert _api_error(sdk.account_information.get_user_account_balance, account_id=account, **_who(user)) == (
        425,
        "3012",
    )
    assert _api_error(sdk.account_information.get_account_activities, account_id=account, **_who(user)) == (425, "3012")
    listing = _accounts(sdk, user)
    assert listing[0]["sync_status"]["transactions"]["initial_sync_completed"] is False
    emu.finish_populating(user.authorization_id)
    assert sdk.account_information.get_user_account_balance(account_id=account, **_who(user)).status == 200


def test_disabled_connection_serves_stale_reads_and_402s_refresh(
    emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser
) -> None:
    assert alice.authorization_id is not None
    auth = alice.authorization_id
    account = alice.account_ids[0]
    before = sdk.account_information.get_all_account_positions(account_id=account, **_who(alice)).body["results"]
    detail = sdk.connections.disable_brokerage_authorization(authorization_id=auth, **_who(alice)).body
    assert auth in detail["detail"]

    after = sdk.account_information.get_all_account_positions(account_id=account, **_who(alice)).body["results"]
    assert after == before
    info = sdk.connections.detail_brokerage_authorization(authorization_id=auth, **_who(alice)).body
    assert info["disabled"] is True
    assert info["disabled_date"]
    refresh = sdk.connections.refresh_brokerage_authorization
    assert _api_error(refresh, authorization_id=auth, **_who(alice)) == (402, "3003")
    sync = sdk.connections.sync_brokerage_authorization_transactions
    assert _api_error(sync, authorization_id=auth, **_who(alice)) == (402, "3003")
    disable = sdk.connections.disable_brokerage_authorization
    assert _api_error(disable, authorization_id=auth, **_who(alice)) == (402, "3011")
    place = sdk.trading.place_force_order
    order = {"action": "BUY", "symbol": "AAPL", "order_type": "Market", "time_in_force": "Day", "units": 1.0}
    assert _api_error(place, account_id=account, **order, **_who(alice)) == (402, "3003")

    # Repair through a reconnect portal link: same connection, same accounts.
    login = sdk.authentication.login_snap_trade_user(reconnect=auth, **_who(alice)).body
    assert emu.complete_connection(login["redirectURI"]) == auth
    assert sdk.connections.refresh_brokerage_authorization(authorization_id=auth, **_who(alice)).status == 200
    assert [a["id"] for a in _accounts(sdk, alice)] == list(alice.account_ids)


def test_helper_disables_a_connection(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    assert alice.authorization_id is not None
    emu.disable_connection(alice.authorization_id)
    refresh = sdk.connections.refresh_brokerage_authorization
    assert _api_error(refresh, authorization_id=alice.authorization_id, **_who(alice)) == (402, "3003")


def test_refresh_throttle() -> None:
    with SnapTradeEmulator(refresh_min_interval_seconds=60) as emu:
        user = emu.connect("r")
        sdk = emu.sdk(retries=False)
        sdk.connections.refresh_brokerage_authorization(authorization_id=user.authorization_id, **_who(user))
        refresh = sdk.connections.refresh_brokerage_authorization
        assert _api_error(refresh, authorization_id=user.authorization_id, **_who(user)) == (429, "throttled")


def test_delete_connection_removes_its_accounts(sdk: Any, alice: ConnectedUser) -> None:
    confirmation = sdk.connections.delete_connection(connection_id=alice.authorization_id, **_who(alice)).body
    assert confirmation["connection_id"] == alice.authorization_id
    assert _accounts(sdk, alice) == []
    assert _api_error(
        sdk.account_information.get_user_account_balance, account_id=alice.account_ids[0], **_who(alice)
    ) == (404, "1011")


# --- orders -------------------------------------------------------------------------------------


def _place(sdk: Any, user: ConnectedUser, **terms: Any) -> dict[str, Any]:
    order = {"account_id": user.account_ids[0], "action": "BUY", "symbol": "AAPL", "time_in_force": "Day"}
    order.update(terms)
    return dict(sdk.trading.place_force_order(**order, **_who(user)).body)


def test_market_order_executes_and_moves_holdings(sdk: Any, alice: ConnectedUser) -> None:
    account = alice.account_ids[0]
    placed = _place(sdk, alice, order_type="Market", units=2.0)
    assert placed["status"] == "EXECUTED"
    assert placed["execution_price"] == "228.50"
    positions = sdk.account_information.get_all_account_positions(account_id=account, **_who(alice)).body["results"]
    aapl = next(p for p in positions if p["instrument"]["symbol"] == "AAPL")
    assert float(aapl["units"]) == 32
    balance = sdk.account_information.get_user_account_balance(account_id=account, **_who(alice)).body[0]
    assert balance["cash"] == pytest.approx(12500 - 2 * 228.50)
    detail = sdk.account_information.get_user_account_order_detail(
        account_id=account, brokerage_order_id=placed["brokerage_order_id"], **_who(alice)
    ).body
    assert detail["brokerage_order_id"] == placed["brokerage_order_id"]
    recent = sdk.account_information.get_user_account_recent_orders(account_id=account, **_who(alice)).body
    assert placed["brokerage_order_id"] in [o["brokerage_order_id"] for o in recent["orders"]]


def test_limit_order_rests_and_can_be_canceled_once(sdk: Any, alice: ConnectedUser) -> None:
    placed = _place(sdk, alice, order_type="Limit", price=100.0, units=1.0)
    assert placed["status"] == "ACCEPTED"
    open_ids = [
        o["brokerage_order_id"]
        for o in sdk.account_information.get_user_account_orders(
            account_id=alice.account_ids[0], state="open", **_who(alice)
        ).body
    ]
    assert placed["brokerage_order_id"] in open_ids
    cancel = sdk.trading.cancel_order
    canceled = cancel(account_id=alice.account_ids[0], brokerage_order_id=placed["brokerage_order_id"], **_who(alice))
    assert canceled.body["brokerage_order_id"] == placed["brokerage_order_id"]
    assert _api_error(
        cancel, account_id=alice.account_ids[0], brokerage_order_id=placed["brokerage_order_id"], **_who(alice)
    ) == (400, "1012")


def test_impact_then_place_once(sdk: Any, alice: ConnectedUser) -> None:
    symbol = sdk.reference_data.get_symbols_by_ticker(query="SPY").body["id"]
    impact = sdk.trading.get_order_impact(
        account_id=alice.account_ids[0],
        action="BUY",
        universal_symbol_id=symbol,
        order_type="Market",
        time_in_force="Day",
        units=1.0,
        **_who(alice),
    ).body
    assert impact["trade_impacts"][0]["remaining_cash"] == pytest.approx(12500 - 560.75)
    trade_id = impact["trade"]["id"]
    placed = sdk.trading.place_order(trade_id=trade_id, **_who(alice)).body
    assert placed["status"] == "EXECUTED"
    assert placed["universal_symbol"]["symbol"] == "SPY"
    assert _api_error(sdk.trading.place_order, trade_id=trade_id, **_who(alice)) == (400, "1012")
    assert _api_error(sdk.trading.place_order, trade_id="00000000-0000-0000-0000-000000000000", **_who(alice)) == (
        404,
        "1011",
    )


def test_client_order_id_is_honoured(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    key = "3e0f5c2a-9b7d-4c1e-8f6a-0d2b4c6e8a1f"
    first = _place(sdk, alice, order_type="Market", units=1.0, client_order_id=key)
    second = _place(sdk, alice, order_type="Market", units=1.0, client_order_id=key)
    assert second["brokerage_order_id"] == first["brokerage_order_id"]
    account = emu.state.get_account(alice.account_ids[0])
    assert sum(1 for o in account.orders if o.client_order_id == key) == 1
    assert emu.journal.count(operation="place_force_order", processed=True) == 2
    # Another account may reuse the key: uniqueness is per brokerage account.
    other = sdk.trading.place_force_order(
        account_id=alice.account_ids[1],
        action="BUY",
        symbol="KO",
        order_type="Market",
        time_in_force="Day",
        units=1.0,
        client_order_id=key,
        **_who(alice),
    ).body
    assert other["brokerage_order_id"] != first["brokerage_order_id"]


def test_duplicate_client_order_id_can_be_rejected() -> None:
    with SnapTradeEmulator(duplicate_client_order_id="reject") as emu:
        user = emu.connect("strict")
        sdk = emu.sdk(retries=False)
        key = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
        _place(sdk, user, order_type="Market", units=1.0, client_order_id=key)
        status, _ = _api_error(_place, sdk, user, order_type="Market", units=1.0, client_order_id=key)
        assert status == 409


def test_invalid_orders_are_400(sdk: Any, alice: ConnectedUser) -> None:
    assert _api_error(_place, sdk, alice, order_type="Limit", units=1.0) == (400, "1012")  # no price
    assert _api_error(_place, sdk, alice, order_type="Market", units=1.0, symbol="NOPE") == (400, "1012")


def test_trade_permission_can_be_enforced() -> None:
    with SnapTradeEmulator(enforce_trade_permission=True) as emu:
        reader = emu.connect("reader", connection_type="read")
        sdk = emu.sdk(retries=False)
        assert _api_error(_place, sdk, reader, order_type="Market", units=1.0)[0] == 403
        trader = emu.connect("trader", brokerage="ALPACA", connection_type="trade")
        assert _place(sdk, trader, order_type="Market", units=1.0)["status"] == "EXECUTED"


# --- misc ---------------------------------------------------------------------------------------


def test_unknown_path_and_method(emu: SnapTradeEmulator) -> None:
    assert signed_request(emu, "GET", "/nope").status == 404
    response = signed_request(emu, "DELETE", "/accounts")
    assert response.status == 405
    assert response.json()["status_code"] == 405


def test_journal_records_operations_without_secrets(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    sdk.account_information.list_all_user_accounts(**_who(alice))
    entry = emu.journal.last(operation="list_all_user_accounts")
    assert entry is not None
    assert (entry.method, entry.path, entry.status, entry.user_id, entry.client_id) == (
        "GET",
        "/accounts/all",
        200,
        alice.user_id,
        emu.client_id,
    )
    assert entry.processed
    assert alice.user_secret not in repr(emu.journal.entries())
    assert alice.user_secret not in repr(alice)
    assert emu.consumer_key not in repr(emu.config)
    with pytest.raises(TypeError):
        emu.journal.entries(secret="x")


@pytest.mark.parametrize(
    ("requested", "brokerage", "expected"),
    [
        ("trade-if-available", "ALPACA", "trade"),
        ("trade-if-available", "SANDBOX", "read"),
        ("trade", "ALPACA", "trade"),
        ("read", "ALPACA", "read"),
    ],
)
def test_connection_types(emu: SnapTradeEmulator, sdk: Any, requested: str, brokerage: str, expected: str) -> None:
    user = emu.create_user("types")
    who = {"user_id": user.user_id, "user_secret": user.user_secret}
    login = sdk.authentication.login_snap_trade_user(connection_type=requested, broker=brokerage, **who).body
    connection_id = emu.complete_connection(login["redirectURI"])  # the login's broker is used
    detail = sdk.connections.detail_brokerage_authorization(authorization_id=connection_id, **who).body
    assert (detail["type"], detail["brokerage"]["slug"]) == (expected, brokerage)
