"""Fixtures of the client tests: an emulator, a connected user, and client factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator


@pytest.fixture
def emu() -> Iterator[SnapTradeEmulator]:
    with SnapTradeEmulator() as emulator:
        yield emulator


@pytest.fixture
def store() -> MemorySecretStore:
    return MemorySecretStore()


@pytest.fixture
def alice(emu: SnapTradeEmulator, store: MemorySecretStore) -> ConnectedUser:
    """A user with one completed connection whose secret is in ``store``."""
    user = emu.connect("alice", brokerage="ALPACA")
    store.put(user.user_id, user.user_secret)
    return user


@pytest.fixture
def market_order(alice: ConnectedUser) -> dict[str, Any]:
    """Arguments of a valid ``place_force_order`` for ``alice``: buy one AAPL at market."""
    return {
        "user_id": alice.user_id,
        "account_id": alice.account_ids[0],
        "action": "BUY",
        "order_type": "Market",
        "time_in_force": "Day",
        "symbol": "AAPL",
        "units": 1.0,
    }


@pytest.fixture
def order_now() -> Callable[..., Any]:
    """Send an order (``market_order``'s arguments) through ``place_order_now``, the journaled flow."""

    def send(client: Any, order: dict[str, Any]) -> Any:
        terms = {k: v for k, v in order.items() if k not in ("user_id", "account_id")}
        terms["units"] = Decimal(str(terms["units"]))
        return client.place_order_now(order["user_id"], order["account_id"], confirm=True, **terms)

    return send


def client_kwargs(emu: SnapTradeEmulator, store: MemorySecretStore, **overrides: Any) -> dict[str, Any]:
    return {
        "client_id": emu.client_id,
        "consumer_key": emu.consumer_key,
        "environment": "sandbox",
        "base_url": emu.base_url,
        "secret_store": store,
        "retry": "none",
        **overrides,
    }


@pytest.fixture
def make_client(emu: SnapTradeEmulator, store: MemorySecretStore) -> Iterator[Callable[..., SafeSnapTradeClient]]:
    made: list[SafeSnapTradeClient] = []

    def make(**overrides: Any) -> SafeSnapTradeClient:
        client = SafeSnapTradeClient(**client_kwargs(emu, store, **overrides))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., SafeSnapTradeClient]) -> SafeSnapTradeClient:
    return make_client()


@pytest.fixture
def make_async_client(emu: SnapTradeEmulator, store: MemorySecretStore) -> Callable[..., AsyncSafeSnapTradeClient]:
    def make(**overrides: Any) -> AsyncSafeSnapTradeClient:
        return AsyncSafeSnapTradeClient(**client_kwargs(emu, store, **overrides))

    return make
