"""The transport calls the SDK's own endpoint methods without importing all 63 operations."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from snaptrade_client.auth import SnapTradeAuth
from snaptrade_client.client import SnapTrade

from aims_snaptrade._transport import _endpoint_class
from aims_snaptrade.operations import OPERATIONS


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_each_operation_calls_the_method_the_sdk_facade_calls(name):
    operation = OPERATIONS[name]
    facade = SnapTrade(auth=SnapTradeAuth.commercial_api_key(consumer_key="k", client_id="c"))
    api = type(getattr(facade, operation.tag))
    endpoint = _endpoint_class(operation)
    assert issubclass(api, endpoint)
    assert getattr(api, operation.name) is getattr(endpoint, operation.name)
    assert getattr(api, operation.async_name) is getattr(endpoint, operation.async_name)


FRESH_PROCESS = """
import json, sys
from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.testing import SnapTradeEmulator

with SnapTradeEmulator() as emu:
    user = emu.connect("u-1")
    loaded = {}
    settings = {"client_id": emu.client_id, "consumer_key": emu.consumer_key, "base_url": emu.base_url,
                "environment": "sandbox", "secret_store_url": "memory://"}
    with SafeSnapTradeClient(**settings) as client:
        client.secret_store.put(user.user_id, user.user_secret)
        accounts = client.list_accounts(user.user_id)
        loaded["facade_before"] = "snaptrade_client.client" in sys.modules
        loaded["endpoint_modules"] = sorted(m for m in sys.modules if m.startswith("snaptrade_client.paths."))
    # The service's own code may still use the SDK as usual afterwards.
    from snaptrade_client import SnapTrade, __version__
    import snaptrade_client
    loaded["facade_after"] = "snaptrade_client.client" in sys.modules
    loaded["version"] = __version__ == snaptrade_client.__version__
    loaded["accounts"] = len(accounts)
print(json.dumps(loaded))
"""


def test_a_call_imports_only_its_own_endpoint_and_the_sdk_stays_whole():
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.splitlines()[-1])
    assert loaded["accounts"] > 0
    assert loaded["facade_before"] is False
    assert loaded["endpoint_modules"] == [
        "snaptrade_client.paths.accounts_all",
        "snaptrade_client.paths.accounts_all.get",
    ]
    assert loaded["facade_after"] is True
    assert loaded["version"] is True


CONSTRUCT_ONLY = """
import json, sys
from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.secrets import MemorySecretStore
client = SafeSnapTradeClient(base_url="http://127.0.0.1:9/api/v1", consumer_key="k", client_id="c",
                             environment="sandbox", secret_store=MemorySecretStore())
heavy = ("cryptography", "psycopg", "redis", "snaptrade_client.client", "hypothesis")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_a_client_without_keys_or_database_servers_loads_none_of_their_libraries():
    out = subprocess.run([sys.executable, "-c", CONSTRUCT_ONLY], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []


@pytest.mark.parametrize("kind", ["commercial", "personal"])
def test_remembered_auth_settings_are_what_the_sdk_computes_at_that_moment(kind):
    from snaptrade_client.configuration import Configuration

    from aims_snaptrade._transport import _remember_auth_settings

    auth = getattr(SnapTradeAuth, f"{kind}_api_key")(consumer_key="k", client_id="c")
    ours, theirs = Configuration(auth=auth), Configuration(auth=auth)
    _remember_auth_settings(ours)
    for timestamp in (1_700_000_000, 1_700_000_001, 1_700_000_000, 1_700_000_002, 1_700_000_003, 1_700_000_004):
        for config in (ours, theirs):  # the SDK rewrites the timestamp before every request
            config.api_key["PartnerTimestamp"] = timestamp
        assert ours.auth_settings() == theirs.auth_settings()
    ours.api_key["PartnerClientId"] = theirs.api_key["PartnerClientId"] = "another"
    assert ours.auth_settings() == theirs.auth_settings()
    calls = []
    ours.refresh_api_key_hook = lambda config: calls.append(config.api_key.__setitem__("PartnerClientId", "hooked"))
    theirs.api_key["PartnerClientId"] = "hooked"
    assert ours.auth_settings() == theirs.auth_settings() and len(calls) >= 1
