"""The personal-data registry: a store that cannot forget is refused; one registered later is walked."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from aims_snaptrade import SafeSnapTradeClient, store_registry
from aims_snaptrade.compliance import PersonalDataRegistry
from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.testing import SnapTradeEmulator


class Crm:
    """An application's own store of user data."""

    def __init__(self) -> None:
        self.rows = {"ann": {"email": "ann@example.test"}, "bob": {"email": "bob@example.test"}}

    def export_user(self, user_id: str) -> Any:
        return self.rows.get(user_id)

    def forget_user(self, user_id: str) -> int:
        return 1 if self.rows.pop(user_id, None) is not None else 0


class ConsentWithoutErase:
    """A consent plug-in that can decide but not forget."""

    kind, persistent = "plugin", True

    def has_consent(self, user_id: str, scope: str) -> bool:
        return True

    def close(self) -> None:
        pass


def _settings(emu: SnapTradeEmulator, **extra: Any) -> dict[str, Any]:
    return {
        "client_id": emu.client_id,
        "consumer_key": emu.consumer_key,
        "environment": "sandbox",
        "base_url": emu.base_url,
        "secret_store_url": "memory://",
        "retry": "none",
        **extra,
    }


def test_a_store_declaring_no_forget_is_refused() -> None:
    registry = PersonalDataRegistry()
    with pytest.raises(SnapTradeConfigurationError, match=r"export_user.*forget_user"):
        registry.register("notes", object(), holds="free-text notes about users")
    registry.register("crm", Crm(), holds="contact details")
    with pytest.raises(SnapTradeConfigurationError, match="already registered"):
        registry.register("crm", Crm(), holds="again")


def test_a_consent_plugin_opened_by_url_that_cannot_forget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "_plugin", lambda url, settings: ConsentWithoutErase())
    point = EntryPoint("noerase", f"{__name__}:_plugin", "aims_snaptrade.consent_stores")
    monkeypatch.setattr(
        store_registry, "entry_points", lambda group: [point] if group == "aims_snaptrade.consent_stores" else []
    )
    with SnapTradeEmulator() as emu, pytest.raises(SnapTradeConfigurationError, match="consents store"):
        SafeSnapTradeClient(**_settings(emu, consent_store_url="noerase://x"))


def test_an_application_store_registered_later_is_exported_and_erased(tmp_path: Path) -> None:
    with SnapTradeEmulator() as emu:
        user = emu.connect("ann", brokerage="ALPACA")
        crm = Crm()
        with SafeSnapTradeClient(**_settings(emu, consent_required=False, sync_ledger_url="memory://")) as client:
            client.secret_store.put(user.user_id, user.user_secret)
            client.personal_data.register("crm", crm, holds="contact details")
            assert client.export_user("ann")["local"]["crm"] == {"email": "ann@example.test"}
            receipt = client.erase_user("ann", confirm=True)
            assert receipt.local["crm_removed"] == 1 and receipt.local["secret_removed"]
            assert "ann" not in crm.rows and "bob" in crm.rows
            assert client.personal_data.names()[:2] == ["secret", "sync"]
