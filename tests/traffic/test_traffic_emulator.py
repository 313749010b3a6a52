"""Traffic control end to end: the clients against the SnapTrade emulator enforcing SnapTrade's limits.

Windows are shrunk to 1-2 s, so these tests take a few seconds of real time; they check counts
(429s, requests that reached the server), never speed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from aims_snaptrade.client import AsyncSafeSnapTradeClient, SafeSnapTradeClient
from aims_snaptrade.errors import SnapTradeRateLimitError, SnapTradeUnknownOutcomeError
from aims_snaptrade.testing import ClientCredentials, ConnectedUser, Fault, RateLimit, SnapTradeEmulator


@pytest.fixture
def credentials() -> ClientCredentials:
    """A key of this test's own, so Redis budgets of other tests never mix in."""
    return ClientCredentials(f"TRAFFIC-{uuid.uuid4().hex[:10]}", "traffic-consumer-key-" + uuid.uuid4().hex)


def start_emulator(credentials: ClientCredentials, **config: Any) -> SnapTradeEmulator:
    return SnapTradeEmulator(clients=(credentials,), **config).start()


def client_settings(emulator: SnapTradeEmulator, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "client_id": emulator.client_id,
        "consumer_key": emulator.consumer_key,
        "environment": "sandbox",
        "base_url": emulator.base_url,
        "secret_store_url": "memory://",
        "consent_required": False,
        "read_timeout": 5.0,
    }
    values.update(overrides)
    return values


@pytest.fixture
def emulator(credentials: ClientCredentials) -> Iterator[SnapTradeEmulator]:
    """An emulator with SnapTrade's limits shrunk: 10 per 2 s per client, 3 per 2 s per account."""
    emu = start_emulator(
        credentials,
        customer_rate_limit=RateLimit(10, 2.0),
        account_rate_limit=RateLimit(3, 2.0),
        account_rate_limit_scope="all",
    )
    yield emu
    emu.stop()


@pytest.fixture
def alice(emulator: SnapTradeEmulator) -> ConnectedUser:
    """A connected user with accounts."""
    return emulator.connect("alice")


def sync_client(emulator: SnapTradeEmulator, user: ConnectedUser, **overrides: Any) -> SafeSnapTradeClient:
    client = SafeSnapTradeClient(**client_settings(emulator, **overrides))
    client.secret_store.put(user.user_id, user.user_secret)
    return client


def arrivals(emulator: SnapTradeEmulator, operation: str) -> list[Any]:
    return sorted(emulator.journal.entries(operation=operation), key=lambda e: e.time)


def test_a_429_with_retry_after_delays_the_next_attempt_at_least_that_long(
    emulator: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    emulator.faults.add(Fault.rate_limited(1), operation="list_all_user_accounts", times=1)
    with sync_client(emulator, alice) as client:
        client.list_accounts("alice")
    first, second = arrivals(emulator, "list_all_user_accounts")
    assert first.status == 429
    assert second.status == 200
    assert second.time - first.time >= 1.0


async def test_async_client_honours_retry_after_too(emulator: SnapTradeEmulator, alice: ConnectedUser) -> None:
    emulator.faults.add(Fault.rate_limited(1), operation="list_all_user_accounts", times=1)
    client = AsyncSafeSnapTradeClient(**client_settings(emulator))
    client.secret_store.put("alice", alice.user_secret)
    try:
        await client.list_accounts("alice")
    finally:
        await client.aclose()
    first, second = arrivals(emulator, "list_all_user_accounts")
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0


def test_lost_response_to_an_order_without_client_order_id_is_an_unknown_outcome_sent_once(
    emulator: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    emulator.faults.add(Fault.lost_response(), operation="place_force_order", times=None)
    client = sync_client(
        emulator, alice, trading_enabled=True, retry_policy="patient", order_intent_store_url="memory://"
    )
    with client, pytest.raises(SnapTradeUnknownOutcomeError):
        client.place_order_now("alice", alice.account_ids[0], action="BUY", symbol="AAPL", units=1, confirm=True)
    (sent,) = arrivals(emulator, "place_force_order")
    assert sent.processed
    assert sent.status is None


def test_client_budget_matching_the_server_limit_sees_no_429(emulator: SnapTradeEmulator, alice: ConnectedUser) -> None:
    with sync_client(emulator, alice, customer_limit=10, customer_limit_window=2, retry_policy="none") as client:
        for _ in range(25):
            client.list_accounts("alice")
    served = arrivals(emulator, "list_all_user_accounts")
    assert len(served) == 25
    assert all(e.status == 200 for e in served)


def test_per_account_buckets_keep_account_calls_under_the_account_limit(
    emulator: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    first, second = alice.account_ids[:2]
    with sync_client(
        emulator,
        alice,
        customer_limit=10,
        customer_limit_window=2,
        account_limit=3,
        account_limit_window=2,
        retry_policy="none",
    ) as client:
        for account in (first, second, first, first, second, first, second):
            client.get_balances("alice", account)
    served = arrivals(emulator, "get_user_account_balance")
    assert len(served) == 7
    assert all(e.status == 200 for e in served)


def test_remaining_header_makes_room_for_another_service_using_the_same_key(
    emulator: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    other_service = emulator.sdk(retries=False)
    for _ in range(6):
        other_service.account_information.list_all_user_accounts(user_id="alice", user_secret=alice.user_secret)
    with sync_client(emulator, alice, customer_limit=10, customer_limit_window=2, retry_policy="none") as client:
        for _ in range(6):
            client.list_accounts("alice")  # without feedback, the 5th and 6th would be throttled
        usage = client.rate_limit_usage()
    served = arrivals(emulator, "list_all_user_accounts")
    assert [e.status for e in served].count(429) == 0
    assert usage[0].name == "customer"


def test_fail_mode_surfaces_the_local_refusal_without_sending(
    emulator: SnapTradeEmulator, alice: ConnectedUser
) -> None:
    with sync_client(emulator, alice, customer_limit=2, customer_limit_window=60, rate_limit_mode="fail") as client:
        client.list_accounts("alice")
        client.list_accounts("alice")
        with pytest.raises(SnapTradeRateLimitError) as info:
            client.list_accounts("alice")
    assert info.value.status is None
    assert info.value.limit_scope == "customer"
    assert 55 <= (info.value.retry_after or 0) <= 61
    assert len(arrivals(emulator, "list_all_user_accounts")) == 2
