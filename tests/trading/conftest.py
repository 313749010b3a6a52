"""Fixtures of the trading tests: an emulator, a connected user, and trading client factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator
from aims_snaptrade.trading import MemoryOrderIntentStore, OrderIntentStore


@pytest.fixture
def emu() -> Iterator[SnapTradeEmulator]:
    with SnapTradeEmulator() as emulator:
        yield emulator


@pytest.fixture
def secrets() -> MemorySecretStore:
    return MemorySecretStore()


@pytest.fixture
def intents() -> MemoryOrderIntentStore:
    return MemoryOrderIntentStore()


@pytest.fixture
def alice(emu: SnapTradeEmulator, secrets: MemorySecretStore) -> ConnectedUser:
    """A user with a trade-enabled Alpaca connection (two accounts) whose secret is in ``secrets``."""
    user = emu.connect("alice", brokerage="ALPACA")
    secrets.put(user.user_id, user.user_secret)
    return user


def trading_kwargs(
    emu: SnapTradeEmulator, secrets: MemorySecretStore, intents: OrderIntentStore | None, **overrides: Any
) -> dict[str, Any]:
    """A sandbox trading client against ``emu``; the trade budget is lifted unless a test sets it."""
    return {
        "client_id": emu.client_id,
        "consumer_key": emu.consumer_key,
        "environment": "sandbox",
        "base_url": emu.base_url,
        "secret_store": secrets,
        "order_intent_store": intents,
        "trading_enabled": True,
        "trade_limit_per_account": 1000,
        "order_settle_seconds": 0,
        "retry": "none",
        **overrides,
    }


@pytest.fixture
def make_client(
    emu: SnapTradeEmulator, secrets: MemorySecretStore, intents: MemoryOrderIntentStore
) -> Iterator[Callable[..., SafeSnapTradeClient]]:
    made: list[SafeSnapTradeClient] = []

    def make(**overrides: Any) -> SafeSnapTradeClient:
        client = SafeSnapTradeClient(**trading_kwargs(emu, secrets, overrides.pop("intents", intents), **overrides))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., SafeSnapTradeClient]) -> SafeSnapTradeClient:
    return make_client()


@pytest.fixture
async def aclient(emu: SnapTradeEmulator, secrets: MemorySecretStore, intents: MemoryOrderIntentStore) -> Any:
    async with AsyncSafeSnapTradeClient(**trading_kwargs(emu, secrets, intents)) as client:
        yield client
