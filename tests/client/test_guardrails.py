"""Acceptance: production guardrails refuse unsafe set-ups; refused calls send nothing."""

from __future__ import annotations

import logging

import pytest

from aims_snaptrade import (
    SafeSnapTradeClient,
    SnapTradeConfigurationError,
    SnapTradeConsentRequiredError,
    SnapTradeGuardrailError,
)
from aims_snaptrade.compliance import AuditKey, SQLiteAuditTrail
from aims_snaptrade.secrets import Keyring, MemorySecretStore, SQLiteSecretStore

KEY = "prod-consumer-key-abcdef0123456789"


class AllowAll:
    def __init__(self, allowed: set[tuple[str, str]] | None = None) -> None:
        self.allowed = allowed

    def has_consent(self, user_id: str, scope: str) -> bool:
        return self.allowed is None or (user_id, scope) in self.allowed


def production(**overrides):
    values = {
        "client_id": "AIMS-PROD",
        "consumer_key": KEY,
        "environment": "production",
        "consent": AllowAll(),
    }
    values.update(overrides)
    return SafeSnapTradeClient(**values)


def test_every_violation_is_listed_at_once_with_its_fix():
    with pytest.raises(SnapTradeGuardrailError) as info:
        production(
            base_url="http://api.example.com/api/v1",
            secret_store=MemorySecretStore(),
            consent_required=False,
            consent=None,
        )
    text = str(info.value)
    assert "https://" in text  # the base URL fix
    assert "in memory" in text and "SNAPTRADE_SECRET_STORE_URL" in text
    assert "SNAPTRADE_CONSENT_REQUIRED" in text
    assert KEY not in text


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        ({"base_url": "http://api.snaptrade.com/api/v1"}, "https://api.snaptrade.com/api/v1"),
        ({"base_url": "https://127.0.0.1:9/api/v1"}, "points at this machine"),
        ({"secret_store": MemorySecretStore()}, "SNAPTRADE_SECRET_STORE_URL"),
        ({"consent_required": False}, "SNAPTRADE_CONSENT_REQUIRED"),
        ({"consent": None}, "consent=<ConsentChecker>"),
    ],
)
def test_each_unsafe_production_setup_is_refused_with_its_fix(tmp_path, overrides, fix):
    keyring = Keyring.generate("v1")
    safe_store = SQLiteSecretStore(tmp_path / "s.db", keyring=keyring)
    overrides.setdefault("secret_store", safe_store)
    with pytest.raises(SnapTradeGuardrailError, match="unsafe production") as info:
        production(**overrides)
    assert fix in str(info.value)
    safe_store.close()


def test_unencrypted_store_is_refused_in_production(tmp_path):
    store = SQLiteSecretStore(tmp_path / "plain.db")
    with pytest.raises(SnapTradeGuardrailError, match="SNAPTRADE_ENCRYPTION_KEYS"):
        production(secret_store=store)
    store.close()


def test_a_safe_production_setup_is_accepted(tmp_path):
    store = SQLiteSecretStore(tmp_path / "s.db", keyring=Keyring.generate("v1"))
    audit = SQLiteAuditTrail(tmp_path / "s.db", AuditKey("k" * 32))
    with production(secret_store=store, audit=audit) as client:
        assert client.settings.is_production
    store.close()
    audit.close()


def test_environment_must_be_explicit():
    with pytest.raises(SnapTradeConfigurationError, match="environment"):
        SafeSnapTradeClient(client_id="c", consumer_key=KEY, secret_store=MemorySecretStore())


def test_trading_is_refused_with_zero_requests(make_client, emu, alice, market_order):
    client = make_client()
    with pytest.raises(SnapTradeGuardrailError, match="SNAPTRADE_TRADING_ENABLED"):
        client.call("get_order_impact", **market_order)
    with pytest.raises(SnapTradeGuardrailError):
        client.connection_portal_url(alice.user_id, connection_type="trade")
    assert len(emu.journal) == 0


def test_trading_works_once_enabled(make_client, emu, alice, market_order, order_now):
    client = make_client(trading_enabled=True, order_intent_store_url="memory://")
    # call() sends no order write: only the journaled flow does (see test_order_writes_in_call).
    with pytest.raises(SnapTradeGuardrailError, match="place_order_now"):
        client.call("place_force_order", **market_order)
    assert order_now(client, market_order).status == "EXECUTED"
    assert emu.journal.count(operation="place_force_order") == 1


def test_consent_is_checked_before_sending(make_client, emu, alice):
    client = make_client(consent=AllowAll({(alice.user_id, "read")}))
    assert client.list_accounts(alice.user_id)
    with pytest.raises(SnapTradeConsentRequiredError, match="bob"):
        client.list_accounts("bob")
    assert emu.journal.count(user_id="bob") == 0


def test_personal_keys_never_manage_users_nor_send_a_user_secret(make_client, emu, caplog):
    personal = emu.personal_credentials
    assert personal is not None
    with make_client(key_type="personal", client_id=personal.client_id, consumer_key=personal.consumer_key) as client:
        with pytest.raises(SnapTradeGuardrailError, match="Personal"):
            client.register_user("someone")
        assert len(emu.journal) == 0
        emu.connect("me", client_id=personal.client_id)
        caplog.set_level(logging.DEBUG, logger="urllib3")
        response = client.call("list_all_user_accounts", user_secret="must-not-travel-123")
        assert response.status == 200 and response.body["results"]
    request_lines = [r.getMessage() for r in caplog.records if "/accounts/all" in r.getMessage()]
    assert request_lines and not any("userSecret" in line for line in request_lines)
