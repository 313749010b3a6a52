"""Acceptance: a production client starts from environment variables alone, or lists all that is missing."""

from __future__ import annotations

import pytest

from aims_snaptrade import SafeSnapTradeClient, SnapTradeGuardrailError
from aims_snaptrade.compliance import SQLiteAuditTrail, SQLiteConsentStore
from aims_snaptrade.secrets import Keyring

CONSUMER_KEY = "prod-consumer-key-from-env-0123456789"
AUDIT_SECRET = "prod-audit-key-from-env-0123456789abcdef"


@pytest.fixture
def production_env(monkeypatch, tmp_path):
    keys = Keyring.generate("v1").export()
    for name in list(__import__("os").environ):
        if name.startswith("SNAPTRADE_"):
            monkeypatch.delenv(name)
    values = {
        "SNAPTRADE_CLIENT_ID": "AIMS-PROD",
        "SNAPTRADE_CONSUMER_KEY": CONSUMER_KEY,
        "SNAPTRADE_ENVIRONMENT": "production",
        "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{tmp_path}/aims.db",
        "SNAPTRADE_ENCRYPTION_KEYS": keys,
        "SNAPTRADE_AUDIT_KEY": AUDIT_SECRET,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_production_client_starts_from_environment_variables_alone(production_env, tmp_path):
    with SafeSnapTradeClient.from_env() as client:
        assert isinstance(client.consent_store, SQLiteConsentStore)
        assert isinstance(client.audit_trail, SQLiteAuditTrail)
        # Beside the secret store: one file holds secrets, consents and the audit chain.
        assert client.consent_store.db.path == tmp_path / "aims.db"
        assert client.audit_trail.db.path == tmp_path / "aims.db"
        assert client.secret_store.encrypted


def test_production_client_refuses_to_start_listing_everything_missing(production_env, monkeypatch):
    monkeypatch.delenv("SNAPTRADE_ENCRYPTION_KEYS")
    monkeypatch.delenv("SNAPTRADE_AUDIT_KEY")
    monkeypatch.setenv("SNAPTRADE_CONSENT_REQUIRED", "false")
    with pytest.raises(SnapTradeGuardrailError) as refused:
        SafeSnapTradeClient.from_env()
    text = str(refused.value)
    for missing in ("SNAPTRADE_ENCRYPTION_KEYS", "SNAPTRADE_AUDIT_KEY", "SNAPTRADE_CONSENT_REQUIRED"):
        assert missing in text
    assert "(3)" in text
    assert CONSUMER_KEY not in text


def test_a_short_audit_key_is_a_configuration_error(production_env, monkeypatch):
    from aims_snaptrade import SnapTradeConfigurationError

    monkeypatch.setenv("SNAPTRADE_AUDIT_KEY", "too-short")
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_AUDIT_KEY") as refused:
        SafeSnapTradeClient.from_env()
    assert "too-short" not in str(refused.value)
