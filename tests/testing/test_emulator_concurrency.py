"""Concurrent clients, threads and asyncio, must not corrupt the emulator's state."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp
from snaptrade_client.exceptions import ApiException

from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator, sign


def test_threads_placing_orders_on_one_account(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    account_id = alice.account_ids[0]
    before = emu.state.get_account(account_id)
    units_before, cash_before, orders_before = before.positions["AAPL"].units, before.cash, len(before.orders)

    def worker(_: int) -> list[str]:
        sdk = emu.sdk(retries=False)  # one SDK (one urllib3 pool) per thread, as services do
        ids = []
        for _ in range(20):
            placed = sdk.trading.place_force_order(
                account_id=account_id,
                action="BUY",
                symbol="AAPL",
                order_type="Market",
                time_in_force="Day",
                units=0.5,  # 160 half shares fit the account's buying power (the emulator checks it)
                user_id=alice.user_id,
                user_secret=alice.user_secret,
            )
            ids.append(placed.body["brokerage_order_id"])
        return ids

    with ThreadPoolExecutor(8) as pool:
        results = [order_id for batch in pool.map(worker, range(8)) for order_id in batch]
    assert len(set(results)) == 160
    after = emu.state.get_account(account_id)
    assert after.positions["AAPL"].units == units_before + 80
    assert after.cash == cash_before - Decimal("114.25") * 160
    assert len(after.orders) == orders_before + 160
    entries = emu.journal.entries(operation="place_force_order")
    assert len(entries) == 160
    assert len({e.request_id for e in entries}) == 160


def test_threads_racing_to_register_the_same_user(emu: SnapTradeEmulator) -> None:
    barrier = threading.Barrier(10)

    def worker(_: int) -> int:
        sdk = emu.sdk(retries=False)
        barrier.wait()
        try:
            return int(sdk.authentication.register_snap_trade_user(user_id="contested").status)
        except ApiException as exc:
            return int(exc.status) if exc.body["code"] == "1010" else -1

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(worker, range(10)))
    assert sorted(statuses) == [200] + [400] * 9


def test_helpers_on_other_threads_while_serving(emu: SnapTradeEmulator) -> None:
    stop = threading.Event()
    failures: list[BaseException] = []

    def reader(user: ConnectedUser) -> None:
        sdk = emu.sdk(retries=False)
        while not stop.is_set():
            try:
                sdk.account_information.list_all_user_accounts(user_id=user.user_id, user_secret=user.user_secret)
                sdk.connections.list_brokerage_authorizations(user_id=user.user_id, user_secret=user.user_secret)
            except BaseException as exc:
                failures.append(exc)
                return

    user = emu.connect("busy")
    threads = [threading.Thread(target=reader, args=(user,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(10):
            emu.connect("busy", scenario="cash_only")  # mutates the user's state concurrently
        time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert not failures
    assert (
        len(emu.state.authorizations(emu.state.authenticate_user(emu.config.default_client, "busy", user.user_secret)))
        == 11
    )


def test_asyncio_clients_in_flight_together(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    async def scenario() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> int:
                query = urlencode(
                    {
                        "userId": alice.user_id,
                        "userSecret": alice.user_secret,
                        "clientId": emu.client_id,
                        "timestamp": str(int(time.time())),
                    }
                )
                body = {
                    "account_id": alice.account_ids[1],
                    "action": "BUY",
                    "symbol": "KO",
                    "order_type": "Market",
                    "time_in_force": "Day",
                    "units": 0.25,  # 100 quarter shares fit the account's buying power
                }
                headers = {"Signature": sign(emu.consumer_key, "/trade/place", query, body)}
                async with session.post(f"{emu.base_url}/trade/place?{query}", json=body, headers=headers) as response:
                    await response.json()
                    return response.status

            return list(await asyncio.gather(*(one(i) for i in range(100))))

    assert asyncio.run(scenario()) == [200] * 100
    assert emu.state.get_account(alice.account_ids[1]).positions["KO"].units == 65


def test_sdk_async_twins_concurrently(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    sdk = emu.sdk()

    async def scenario() -> list[int]:
        calls = [
            sdk.account_information.alist_all_user_accounts(user_id=alice.user_id, user_secret=alice.user_secret)
            for _ in range(40)
        ]
        return [response.status for response in await asyncio.gather(*calls)]

    assert asyncio.run(scenario()) == [200] * 40
