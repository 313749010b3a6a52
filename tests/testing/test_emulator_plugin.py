"""The pytest plugin's fixtures, used the way an AIMS service would use them."""

from __future__ import annotations

from typing import Any

import pytest
from snaptrade_client.exceptions import ApiException

from aims_snaptrade.testing import (
    ConnectedUser,
    EmulatorConfig,
    Fault,
    FaultInjector,
    Journal,
    RateLimit,
    SnapTradeEmulator,
)


def test_emulator_fixture_runs(snaptrade_emulator: SnapTradeEmulator) -> None:
    assert snaptrade_emulator.running
    assert snaptrade_emulator.base_url.endswith("/api/v1")


def test_user_sdk_faults_and_journal_fixtures(
    snaptrade_user: ConnectedUser,
    snaptrade_sdk: Any,
    snaptrade_faults: FaultInjector,
    snaptrade_journal: Journal,
) -> None:
    who = {"user_id": snaptrade_user.user_id, "user_secret": snaptrade_user.user_secret}
    accounts = snaptrade_sdk.account_information.list_all_user_accounts(**who).body["results"]
    assert [a["id"] for a in accounts] == list(snaptrade_user.account_ids)
    snaptrade_faults.add(Fault.status(500), operation="list_all_user_accounts")
    with pytest.raises(ApiException):
        snaptrade_sdk.account_information.list_all_user_accounts(**who)
    assert snaptrade_journal.count(operation="list_all_user_accounts") == 2


def test_session_emulator_is_shared(snaptrade_emulator_session: SnapTradeEmulator) -> None:
    assert snaptrade_emulator_session.running


class TestConfigOverride:
    @pytest.fixture
    def snaptrade_emulator_config(self) -> EmulatorConfig:
        return EmulatorConfig(customer_rate_limit=RateLimit(3, 30.0), seed=42)

    def test_overridden_config_is_used(self, snaptrade_emulator: SnapTradeEmulator, snaptrade_sdk: Any) -> None:
        assert snaptrade_emulator.config.seed == 42
        response = snaptrade_sdk.authentication.list_snap_trade_users()
        assert response.headers["X-RateLimit-Limit"] == "3"


def test_library_client_fixture(snaptrade_client: Any, snaptrade_user: ConnectedUser, snaptrade_journal: Any) -> None:
    # Only checks the wiring: the client's own behaviour is tested with the client.
    accounts = snaptrade_client.list_accounts(snaptrade_user.user_id)
    assert sorted(a.id for a in accounts) == sorted(snaptrade_user.account_ids)
    assert snaptrade_journal.count(operation="list_all_user_accounts") == 1


async def test_library_async_client_fixture(snaptrade_async_client: Any, snaptrade_user: ConnectedUser) -> None:
    accounts = await snaptrade_async_client.list_accounts(snaptrade_user.user_id)
    assert sorted(a.id for a in accounts) == sorted(snaptrade_user.account_ids)
