"""A 410 retires the endpoint for the account, whatever SnapTrade's body code says (the HTTP status
decides): the account is ``retired``, the request is not retried, and it is not fetched again on the
next sync."""

from __future__ import annotations

import pytest
from sync_helpers import client_kwargs, secrets_of, seed

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.sync import AccountState, SQLiteSyncLedger
from aims_snaptrade.testing import Fault, SnapTradeEmulator


@pytest.mark.parametrize("code", [None, "1000", "3002", "1011"])
def test_a_410_retires_the_endpoint_whatever_code_its_body_carries(emu: SnapTradeEmulator, code: str | None) -> None:
    users = seed(emu, 1)
    user = users[0]
    emu.faults.add(Fault.status(410, code=code), operation="get_all_account_positions", times=None)
    with SafeSnapTradeClient(
        **client_kwargs(emu, secret_store=secrets_of(users), sync_ledger=SQLiteSyncLedger(":memory:"))
    ) as client:
        first = client.sync_portfolio(user.user_id)
        assert {a.state for a in first.accounts} == {AccountState.RETIRED}
        # Retired, not a server error: sent once (never retried), and not fetched again on the next sync.
        assert emu.journal.count(operation="get_all_account_positions") == len(user.account_ids)
        emu.journal.clear()
        assert client.sync_portfolio(user.user_id).requests == 0
