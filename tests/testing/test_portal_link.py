"""``complete_portal_link``: the Connection Portal completed over HTTP, as against a standalone emulator."""

from __future__ import annotations

import pytest

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import ConnectionPortalError, SnapTradeEmulator, complete_portal_link


@pytest.fixture
def client(snaptrade_emulator: SnapTradeEmulator):
    emu = snaptrade_emulator
    with SafeSnapTradeClient(
        client_id=emu.client_id,
        consumer_key=emu.consumer_key,
        environment="sandbox",
        base_url=emu.base_url,
        secret_store=MemorySecretStore(),
    ) as made:
        made.register_user("pat")
        yield made


def test_a_completed_link_yields_the_scenarios_accounts(client: SafeSnapTradeClient) -> None:
    link = client.connection_portal_url("pat")
    connection_id = complete_portal_link(link.redirect_uri, scenario="self_directed", brokerage="ALPACA")
    accounts = client.list_accounts("pat")
    assert len(accounts) == 2
    assert {a.connection_id for a in accounts} == {connection_id}
    with pytest.raises(ConnectionPortalError) as used:
        complete_portal_link(link.redirect_uri)
    assert used.value.reason == "session_used"


def test_a_failing_scenario_reports_its_reason(client: SafeSnapTradeClient) -> None:
    link = client.connection_portal_url("pat")
    with pytest.raises(ConnectionPortalError) as info:
        complete_portal_link(link.redirect_uri, scenario="invalid_credentials")
    assert info.value.reason == "invalid_credentials"
    assert client.list_accounts("pat") == []


def test_a_custom_redirect_is_reported_not_followed(client: SafeSnapTradeClient) -> None:
    link = client.connection_portal_url("pat", custom_redirect="https://aims.example/after-connect")
    connection_id = complete_portal_link(link.redirect_uri)
    assert {a.connection_id for a in client.list_accounts("pat")} == {connection_id}


def test_not_a_portal_link() -> None:
    with pytest.raises(ConnectionPortalError, match="not an emulator portal link"):
        complete_portal_link("http://127.0.0.1:9/api/v1/accounts")
