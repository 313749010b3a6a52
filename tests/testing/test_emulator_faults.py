"""Each fault kind, and the effect it has on a client (the raw official SDK, urllib3, aiohttp)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import urllib3
from emulator_helpers import signed_request
from snaptrade_client.exceptions import ApiException
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from aims_snaptrade.testing import ConnectedUser, Fault, FaultKind, SnapTradeEmulator


def _who(user: ConnectedUser) -> dict[str, str]:
    return {"user_id": user.user_id, "user_secret": user.user_secret}


def _order(user: ConnectedUser, **extra: Any) -> dict[str, Any]:
    return {
        "account_id": user.account_ids[0],
        "action": "BUY",
        "symbol": "AAPL",
        "order_type": "Market",
        "time_in_force": "Day",
        "units": 1.0,
        **_who(user),
        **extra,
    }


def test_status_fault_fires_the_given_number_of_times(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    rule = emu.faults.add(Fault.status(503), operation="list_all_user_accounts", times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            sdk.account_information.list_all_user_accounts(**_who(alice))
        assert exc.value.status == 503
        assert exc.value.body["code"] == "3002"
        assert exc.value.headers["X-Request-ID"]
    assert sdk.account_information.list_all_user_accounts(**_who(alice)).status == 200
    assert (rule.matched, rule.fired, rule.exhausted) == (2, 2, True)  # exhausted rules stop counting
    faulted = emu.journal.entries(operation="list_all_user_accounts", fault="status_503")
    assert [(e.status, e.processed) for e in faulted] == [(503, False), (503, False)]


def test_status_fault_can_carry_code_detail_and_retry_after(emu: SnapTradeEmulator, sdk: Any) -> None:
    emu.faults.add(Fault.status(500, code="1000", detail="boom", retry_after=3), operation="list_snap_trade_users")
    with pytest.raises(ApiException) as exc:
        sdk.authentication.list_snap_trade_users()
    assert exc.value.body == {"detail": "boom", "status_code": 500, "code": "1000"}
    assert exc.value.headers["Retry-After"] == "3"


def test_rate_limited_fault_gives_snaptrade_429(emu: SnapTradeEmulator, sdk: Any) -> None:
    emu.faults.add(Fault.rate_limited(retry_after=7), operation="list_snap_trade_users")
    with pytest.raises(ApiException) as exc:
        sdk.authentication.list_snap_trade_users()
    assert exc.value.status == 429
    assert exc.value.headers["Retry-After"] == "7"
    assert exc.value.body == {
        "detail": "Request was throttled. Expected available in 7 seconds.",
        "status_code": 429,
        "code": "0000",
    }


def test_sdk_default_retries_hide_a_429_with_retry_after(emu: SnapTradeEmulator) -> None:
    # The SDK's urllib3 pool (Retry(3)) sleeps Retry-After and retries GETs on its own.
    emu.faults.add(Fault.rate_limited(retry_after=0), operation="list_snap_trade_users")
    assert emu.sdk().authentication.list_snap_trade_users().status == 200
    assert [e.status for e in emu.journal.entries(operation="list_snap_trade_users")] == [429, 200]


def test_unauthorized_fault(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    emu.faults.add(Fault.unauthorized("1083"), operation="get_user_account_balance")
    with pytest.raises(ApiException) as exc:
        sdk.account_information.get_user_account_balance(account_id=alice.account_ids[0], **_who(alice))
    assert (exc.value.status, exc.value.body["code"]) == (401, "1083")


def test_latency_fault_delays_but_processes(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    emu.faults.add(Fault.latency(0.3), operation="place_force_order")
    started = time.perf_counter()
    placed = sdk.trading.place_force_order(**_order(alice))
    assert time.perf_counter() - started >= 0.3
    assert placed.body["status"] == "EXECUTED"
    entry = emu.journal.last(operation="place_force_order")
    assert entry is not None
    assert (entry.fault, entry.processed, entry.status) == ("latency", True, 200)


def test_timeout_fault_trips_a_client_read_timeout(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    emu.faults.add(Fault.timeout(hold=5.0), operation="list_all_user_accounts")
    api = sdk.account_information
    args = api._list_all_user_accounts_mapped_args(**_who(alice))
    started = time.perf_counter()
    with pytest.raises(ReadTimeoutError):
        api._list_all_user_accounts_oapg(query_params=args.query, timeout=0.3)
    assert 0.3 <= time.perf_counter() - started < 2.0
    entry = emu.journal.last(operation="list_all_user_accounts")
    assert entry is None or not entry.processed  # journaled when the hold ends


def test_drop_fault_closes_without_answer_and_does_not_process(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    sdk = emu.sdk()  # default urllib3 retries: a POST is never retried after a read error
    emu.faults.add(Fault.drop(), operation="place_force_order")
    before = len(emu.state.get_account(alice.account_ids[0]).orders)
    with pytest.raises(ProtocolError):
        sdk.trading.place_force_order(**_order(alice))
    entry = emu.journal.last(operation="place_force_order")
    assert entry is not None
    assert (entry.status, entry.fault, entry.processed) == (None, "drop", False)
    assert len(emu.state.get_account(alice.account_ids[0]).orders) == before


def test_sdk_default_retries_hide_a_dropped_get(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    emu.faults.add(Fault.drop(), operation="list_all_user_accounts")
    assert emu.sdk().account_information.list_all_user_accounts(**_who(alice)).status == 200
    assert [e.fault for e in emu.journal.entries(operation="list_all_user_accounts")] == ["drop", None]


def test_lost_response_places_the_order_but_the_client_gets_nothing(
    emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser
) -> None:
    client_order_id = "8b1e7f0a-4c2d-4e6f-9a1b-2c3d4e5f6a7b"
    emu.faults.add(Fault.lost_response(), operation="place_force_order")
    with pytest.raises(ProtocolError):
        sdk.trading.place_force_order(**_order(alice, client_order_id=client_order_id))
    assert emu.journal.count(operation="place_force_order", processed=True) == 1
    # Reconciling shows the order exists; resending with the same client_order_id returns it.
    recent = sdk.account_information.get_user_account_recent_orders(account_id=alice.account_ids[0], **_who(alice)).body
    placed = [
        o for o in recent["orders"] if o["universal_symbol"]["symbol"] == "AAPL" and float(o["total_quantity"]) == 1
    ]
    assert len(placed) == 1
    again = sdk.trading.place_force_order(**_order(alice, client_order_id=client_order_id)).body
    assert again["brokerage_order_id"] == placed[0]["brokerage_order_id"]


def test_malformed_json_fault(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    from snaptrade_client.schemas import unset

    emu.faults.add(Fault.malformed_json(), operation="list_all_user_accounts", times=2)
    # The SDK swallows the decoding error and hands back an unset body with status 200.
    response = sdk.account_information.list_all_user_accounts(**_who(alice))
    assert response.status == 200
    assert response.body is unset
    raw = signed_request(emu, "GET", "/accounts/all", params={"userId": alice.user_id, "userSecret": alice.user_secret})
    assert raw.status == 200
    with pytest.raises(ValueError):
        raw.json()


def test_nth_request_fault_hits_whatever_request_comes_third(emu: SnapTradeEmulator, sdk: Any) -> None:
    rule = emu.faults.add(Fault.status(500), nth=3)
    statuses = []
    for _ in range(5):
        try:
            statuses.append(sdk.api_status.check().status)
        except ApiException as exc:
            statuses.append(exc.status)
    assert statuses == [200, 200, 500, 200, 200]
    assert rule.fired == 1


def test_repeated_fault_and_path_patterns(emu: SnapTradeEmulator, sdk: Any, alice: ConnectedUser) -> None:
    emu.faults.add(Fault.status(502), path="/accounts/*/balances", times=None)
    for _ in range(3):
        with pytest.raises(ApiException) as exc:
            sdk.account_information.get_user_account_balance(account_id=alice.account_ids[0], **_who(alice))
        assert exc.value.status == 502
    # A template matches too, and a method filter narrows it.
    emu.faults.clear()
    emu.faults.add(Fault.status(504), path="/accounts/{accountId}/positions/all", method="POST")
    assert (
        sdk.account_information.get_all_account_positions(account_id=alice.account_ids[0], **_who(alice)).status == 200
    )
    rule = emu.faults.add(Fault.status(504), path="/accounts/{accountId}/positions/all", method="GET")
    with pytest.raises(ApiException):
        sdk.account_information.get_all_account_positions(account_id=alice.account_ids[0], **_who(alice))
    assert rule.fired == 1


def test_rules_can_be_removed(emu: SnapTradeEmulator, sdk: Any) -> None:
    rule = emu.faults.add(Fault.status(503), operation="check", times=None)
    with pytest.raises(ApiException):
        sdk.api_status.check()
    rule.remove()
    assert sdk.api_status.check().status == 200
    assert len(emu.faults) == 0


def test_fault_definitions_are_validated() -> None:
    with pytest.raises(ValueError):
        Fault.status(200)
    with pytest.raises(ValueError):
        Fault.timeout(0)
    assert Fault.drop().kind is FaultKind.DROP
    assert not Fault.drop().processes_request
    assert Fault.lost_response().processes_request


def test_async_client_sees_disconnects_and_timeouts(emu: SnapTradeEmulator) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            drop = emu.faults.add(Fault.drop(), operation="check", times=None)
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await (await session.get(emu.base_url + "/")).read()
            assert drop.fired >= 1  # aiohttp itself may resend an idempotent request once
            drop.remove()
            emu.faults.add(Fault.timeout(hold=5.0), operation="check", times=None)
            started = time.perf_counter()
            with pytest.raises(asyncio.TimeoutError):
                await session.get(emu.base_url + "/", timeout=aiohttp.ClientTimeout(total=0.3))
            assert time.perf_counter() - started < 2.0
            emu.faults.clear()
            async with session.get(emu.base_url + "/") as ok:
                assert ok.status == 200

    asyncio.run(scenario())


def test_sdk_async_twin_sees_fault_status(emu: SnapTradeEmulator) -> None:
    emu.faults.add(Fault.status(503), operation="list_snap_trade_users")

    async def scenario() -> int:
        try:
            await emu.sdk().authentication.alist_snap_trade_users()
        except ApiException as exc:
            return int(exc.status)
        return 200

    assert asyncio.run(scenario()) == 503


def test_pool_keeps_working_after_a_dropped_connection(emu: SnapTradeEmulator) -> None:
    pool = urllib3.PoolManager(retries=False)
    emu.faults.add(Fault.drop(), operation="check")
    with pytest.raises(ProtocolError):
        pool.request("GET", emu.base_url + "/")
    assert pool.request("GET", emu.base_url + "/").status == 200


def test_fault_can_target_one_client(emu: SnapTradeEmulator) -> None:
    creds = emu.personal_credentials
    assert creds is not None
    emu.faults.add(Fault.status(503), client_id=creds.client_id, times=None)
    assert emu.sdk(retries=False).authentication.list_snap_trade_users().status == 200
    with pytest.raises(ApiException) as exc:
        emu.sdk(personal=True, retries=False).account_information.list_all_user_accounts()
    assert exc.value.status == 503
