"""Every refusal of every operation, trading included, is one audited record; retention runs as
commands and Celery tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.compliance import AuditEvent, AuditKey, SQLiteAuditTrail, SQLiteConsentStore
from aims_snaptrade.errors import (
    SnapTradeConfirmationError,
    SnapTradeConsentRequiredError,
    SnapTradeGuardrailError,
    SnapTradeOrderLimitError,
    SnapTradeRolloutError,
)
from aims_snaptrade.settings import Settings
from aims_snaptrade.testing import SnapTradeEmulator

SECRET = "refusal-test-audit-key-0123456789abcdef"
TERMS: dict[str, Any] = {"action": "BUY", "symbol": "AAPL", "units": 1}


@pytest.fixture
def world(tmp_path: Path):
    with SnapTradeEmulator() as emu:
        user = emu.connect("refused-user", brokerage="ALPACA")
        settings = {
            "client_id": emu.client_id,
            "consumer_key": emu.consumer_key,
            "environment": "sandbox",
            "base_url": emu.base_url,
            "secret_store_url": "memory://",
            "consent_store_url": f"sqlite:///{tmp_path}/aims.db",
            "audit_key": SECRET,
            "audit_store_url": f"sqlite:///{tmp_path}/aims.db",
            "order_intent_store_url": "memory://",
            "trading_enabled": True,
            "max_order_notional": "1000000",
            "retry": "none",
        }
        with SafeSnapTradeClient(**settings) as client:
            client.secret_store.put(user.user_id, user.user_secret)
            client.grant_consent(user.user_id, "read", disclosure_version="v1", source="test")
            yield emu, user, client


def _refusal(client: SafeSnapTradeClient, before: int, action: str, outcome: str) -> None:
    """Exactly one record was added since ``before``: the refusal, with nothing sent."""
    records = [r for r in client.audit_trail.tail(50) if r.seq > before]
    assert [(r.kind, r.action, r.outcome, r.attempts) for r in records] == [("refused", action, outcome, 0)]
    assert client.audit_trail.verify().ok


def _head(client: SafeSnapTradeClient) -> int:
    return client.audit_trail.tail(1)[0].seq


def test_trading_refusals_are_each_one_audited_record(world) -> None:
    emu, user, client = world
    account = user.account_ids[0]
    sent = emu.journal.count()

    before = _head(client)
    with pytest.raises(SnapTradeConsentRequiredError):  # no trade consent: checked outside call()
        client.place_order_now(user.user_id, account, **TERMS, confirm=True)
    _refusal(client, before, "place_force_order", "SnapTradeConsentRequiredError")

    before = _head(client)
    with pytest.raises(SnapTradeGuardrailError):
        client.place_order_now(user.user_id, account, **TERMS, confirm=False)
    _refusal(client, before, "place_force_order", "SnapTradeGuardrailError")

    client.grant_consent(user.user_id, "trade", disclosure_version="v1", source="test")
    preview = client.preview_order(user.user_id, account, **TERMS)
    before = _head(client)
    with pytest.raises(SnapTradeConfirmationError):
        client.place_order(preview, confirmation="not-the-token")
    _refusal(client, before, "place_order", "SnapTradeConfirmationError")

    before = _head(client)
    with pytest.raises(SnapTradeOrderLimitError):
        client.place_order_now(
            user.user_id, account, action="BUY", symbol="AAPL", notional_value="2000000", confirm=True
        )
    _refusal(client, before, "place_force_order", "SnapTradeOrderLimitError")

    before = _head(client)
    with pytest.raises(SnapTradeGuardrailError):
        client.erase_user(user.user_id, confirm=False)
    _refusal(client, before, "erase_user", "SnapTradeGuardrailError")

    # Reads refused by the road are audited the same way (one record each).
    client.revoke_consent(user.user_id, source="test")
    before = _head(client)
    with pytest.raises(SnapTradeConsentRequiredError):
        client.list_accounts(user.user_id)
    _refusal(client, before, "list_all_user_accounts", "SnapTradeConsentRequiredError")
    assert emu.journal.count(operation="place_force_order") == 0
    assert emu.journal.count() - sent == emu.journal.count(operation="get_order_impact") + emu.journal.count(
        operation="get_symbols_by_ticker"
    )


def test_a_rollout_refusal_of_a_trade_is_one_record(world, tmp_path: Path) -> None:
    _, user, client = world
    outside = SafeSnapTradeClient(
        Settings.build({**client.settings.model_dump(), "rollout": "allow=somebody-else"}),
        secret_store=client.secret_store,
    )
    try:
        before = _head(outside)
        with pytest.raises(SnapTradeRolloutError):
            outside.place_order_now(user.user_id, user.account_ids[0], **TERMS, confirm=True)
        _refusal(outside, before, "place_force_order", "SnapTradeRolloutError")
    finally:
        outside.close()


def _env(db: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SNAPTRADE_")},
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_CLIENT_ID": "AIMS-TEST",
        "SNAPTRADE_CONSUMER_KEY": "consumer-key-for-the-cli-test-0000000000",
        "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{db}",
        "SNAPTRADE_AUDIT_KEY": SECRET,
    }


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "aims_snaptrade", *args]
    return subprocess.run(command, env=_env(db), capture_output=True, text=True, timeout=60)


def test_retention_commands_purge_and_sweep(tmp_path: Path) -> None:
    db = tmp_path / "aims.db"
    old = datetime.now(UTC) - timedelta(days=800)
    trail = SQLiteAuditTrail(db, AuditKey(SECRET), clock=lambda: old.timestamp())
    for i in range(3):
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id=f"u{i}"))
    trail.close()
    consents = SQLiteConsentStore(db)
    consents.grant("lapsed", "read", "v1", "web", granted_at=old)  # expired long ago
    consents.grant("current", "read", "v1", "web")
    consents.close()

    bad = _cli(db, "audit", "purge", "--before", "2026-01-01T00:00:00")  # a time without an offset
    assert bad.returncode == 2 and "UTC offset" in bad.stderr  # bad usage, as the command documents
    done = _cli(db, "audit", "purge", "--older-than-days", "400", "--json")
    assert done.returncode == 0, done.stderr
    assert '"removed": 3' in done.stdout
    swept = _cli(db, "consent", "sweep", "--older-than-days", "30")
    assert swept.returncode == 0, swept.stderr
    assert "removed 1 lapsed" in swept.stdout
    assert _cli(db, "audit", "verify").returncode == 0

    consents = SQLiteConsentStore(db)
    assert consents.records("lapsed") == [] and len(consents.records("current")) == 1
    consents.close()
    trail = SQLiteAuditTrail(db, AuditKey(SECRET))
    actions = [r.action for r in trail.tail(10)]
    trail.close()
    assert actions == ["audit.purge", "consent.sweep"]


def test_celery_beat_tasks_purge_and_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    celery = pytest.importorskip("celery")
    from aims_snaptrade.integrations.celery_retention import register_retention_tasks, retention_beat_schedule

    db = tmp_path / "aims.db"
    old = datetime.now(UTC) - timedelta(days=800)
    trail = SQLiteAuditTrail(db, AuditKey(SECRET), clock=lambda: old.timestamp())
    trail.append(AuditEvent("call", "list_all_user_accounts", user_id="u1"))
    trail.close()
    for name, value in _env(db).items():
        if name.startswith("SNAPTRADE_"):
            monkeypatch.setenv(name, value)
    app = celery.Celery("retention-test")
    app.conf.task_always_eager = True
    purge, sweep = register_retention_tasks(app)
    schedule = retention_beat_schedule(audit_days=400, consent_days=30)
    assert {entry["task"] for entry in schedule.values()} == {purge.name, sweep.name}
    assert purge.apply(args=(400,)).get()["removed"] == 1
    assert sweep.apply(args=(30,)).get()["removed"] == 0
    with pytest.raises(Exception, match="days"):
        retention_beat_schedule(audit_days=-1, consent_days=30)
