"""pytest fixtures for services testing against the SnapTrade emulator.

Registered through the ``pytest11`` entry point, so installing ``aims-snaptrade`` is enough:

``snaptrade_emulator_config``
    The :class:`~aims_snaptrade.testing.EmulatorConfig` of ``snaptrade_emulator``. Override it in a
    ``conftest.py`` (or parametrize it indirectly) to shrink rate-limit windows, change the seed...
``snaptrade_emulator``
    A running emulator for one test, stopped afterwards.
``snaptrade_emulator_session``
    One emulator shared by the whole session (default config). Tests sharing it should use
    distinct user ids, and must clear any fault they add to it themselves: no fixture of this
    plugin touches its faults.
``snaptrade_faults`` / ``snaptrade_journal``
    The per-test ``snaptrade_emulator``'s fault rules (cleared after the test) and its journal.
    They act on ``snaptrade_emulator``, the emulator ``snaptrade_client``/``snaptrade_user`` use,
    never on ``snaptrade_emulator_session``.
``snaptrade_user``
    A registered user with one completed, trade-enabled connection at Alpaca seeded with the
    ``self_directed`` scenario: a :class:`~aims_snaptrade.testing.ConnectedUser` (ids, secret).
``snaptrade_sdk``
    The official SDK client (``snaptrade_client.SnapTrade``) wired to the emulator.
``snaptrade_client``
    The library's ``SafeSnapTradeClient`` wired to the emulator, with an in-memory secret store
    holding ``snaptrade_user``'s secret.
``snaptrade_async_client``
    The same for ``AsyncSafeSnapTradeClient``. Needs pytest-asyncio; it is declared with
    ``pytest_asyncio.fixture``, so it works in pytest-asyncio's default *strict* mode (mark the
    test ``@pytest.mark.asyncio``) as well as with ``asyncio_mode = "auto"``.

Only this module is imported when pytest starts; the emulator (and aiohttp, and the SDK) are
imported when a fixture is first used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest


def _async_fixture_decorator() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    # Strict mode (pytest-asyncio's default) only runs async fixtures declared through its decorator.
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - without pytest-asyncio no async test can run anyway
        return pytest.fixture
    return pytest_asyncio.fixture


_async_fixture = _async_fixture_decorator()

if TYPE_CHECKING:
    from aims_snaptrade.testing.config import EmulatorConfig
    from aims_snaptrade.testing.emulator import ConnectedUser, SnapTradeEmulator
    from aims_snaptrade.testing.faults import FaultInjector
    from aims_snaptrade.testing.journal import Journal

__all__ = [
    "snaptrade_async_client",
    "snaptrade_client",
    "snaptrade_emulator",
    "snaptrade_emulator_config",
    "snaptrade_emulator_session",
    "snaptrade_faults",
    "snaptrade_journal",
    "snaptrade_sdk",
    "snaptrade_user",
]


@pytest.fixture
def snaptrade_emulator_config() -> EmulatorConfig:
    """Configuration of ``snaptrade_emulator``; override this fixture to change it."""
    from aims_snaptrade.testing.config import EmulatorConfig

    return EmulatorConfig()


@pytest.fixture
def snaptrade_emulator(snaptrade_emulator_config: EmulatorConfig) -> Iterator[SnapTradeEmulator]:
    """A SnapTrade emulator running for the duration of one test."""
    from aims_snaptrade.testing.emulator import SnapTradeEmulator

    with SnapTradeEmulator(snaptrade_emulator_config) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def snaptrade_emulator_session() -> Iterator[SnapTradeEmulator]:
    """One SnapTrade emulator (default configuration) shared by the whole test session."""
    from aims_snaptrade.testing.emulator import SnapTradeEmulator

    with SnapTradeEmulator() as emulator:
        yield emulator


@pytest.fixture
def snaptrade_faults(snaptrade_emulator: SnapTradeEmulator) -> Iterator[FaultInjector]:
    """The emulator's fault rules; every rule is withdrawn after the test."""
    yield snaptrade_emulator.faults
    snaptrade_emulator.faults.clear()


@pytest.fixture
def snaptrade_journal(snaptrade_emulator: SnapTradeEmulator) -> Journal:
    """The emulator's request journal."""
    return snaptrade_emulator.journal


@pytest.fixture
def snaptrade_user(snaptrade_emulator: SnapTradeEmulator) -> ConnectedUser:
    """A registered user with one completed ``self_directed`` connection at Alpaca (trade-enabled)."""
    return snaptrade_emulator.connect("aims-test-user", brokerage="ALPACA", connection_type="trade")


@pytest.fixture
def snaptrade_sdk(snaptrade_emulator: SnapTradeEmulator) -> Any:
    """The official SnapTrade SDK client wired to the emulator (commercial key)."""
    return snaptrade_emulator.sdk()


@pytest.fixture
def snaptrade_client(snaptrade_emulator: SnapTradeEmulator, snaptrade_user: ConnectedUser) -> Iterator[Any]:
    """The library's ``SafeSnapTradeClient`` wired to the emulator.

    Built with ``environment="sandbox"``, ``base_url=emulator.base_url`` and a
    ``MemorySecretStore`` holding ``snaptrade_user``'s secret.
    """
    from aims_snaptrade.client import SafeSnapTradeClient

    with SafeSnapTradeClient(**_client_arguments(snaptrade_emulator, snaptrade_user)) as client:
        yield client


@_async_fixture
async def snaptrade_async_client(snaptrade_emulator: SnapTradeEmulator, snaptrade_user: ConnectedUser) -> Any:
    """The library's ``AsyncSafeSnapTradeClient`` wired to the emulator (needs pytest-asyncio)."""
    from aims_snaptrade.client import AsyncSafeSnapTradeClient

    async with AsyncSafeSnapTradeClient(**_client_arguments(snaptrade_emulator, snaptrade_user)) as client:
        yield client


def _client_arguments(emulator: SnapTradeEmulator, user: ConnectedUser) -> dict[str, Any]:
    from aims_snaptrade.secrets import MemorySecretStore

    store = MemorySecretStore()
    store.put(user.user_id, user.user_secret)
    return {
        "client_id": emulator.client_id,
        "consumer_key": emulator.consumer_key,
        "environment": "sandbox",
        "base_url": emulator.base_url,
        "secret_store": store,
    }
