"""The small promises around the compliance stores: the webhook hook's records, JSON forms,
what the PostgreSQL stores are opened with, and reprs that name the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from compliance_helpers import Tamperer

from aims_snaptrade._sql.database import SQLiteDatabase
from aims_snaptrade.compliance import (
    AuditKey,
    PostgresAuditTrail,
    PostgresConsentStore,
    SQLiteAuditTrail,
    SQLiteConsentStore,
    audit_webhooks,
)
from aims_snaptrade.compliance import audit as audit_module
from aims_snaptrade.compliance import consent as consent_module
from aims_snaptrade.compliance.consent import ConsentRecord

KEY = AuditKey("plumbing-test-audit-key-0123456789abcdef")


def test_the_webhook_hook_records_what_the_event_names(tmp_path: Path) -> None:
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    try:
        hook = audit_webhooks(trail)
        hook(
            SimpleNamespace(
                webhook_id="wh-1",
                event_type="CONNECTION_BROKEN",
                user_id="frank",
                account_id="acc-9",
                authorization_id="auth-3",
            )
        )
        hook(SimpleNamespace(webhook_id="wh-2", event_type="USER_REGISTERED", authorization_id=None))
        hook(SimpleNamespace())  # an event naming nothing is still recorded
        first, second, third = (r.to_json() for r in trail.tail(3))
        assert (first["kind"], first["action"], first["user_id"], first["account_id"]) == (
            "webhook",
            "webhook.CONNECTION_BROKEN",
            "frank",
            "acc-9",
        )
        assert first["detail"] == {"webhook_id": "wh-1", "authorization_id": "auth-3"}
        assert (second["action"], second["user_id"], second["detail"]) == (
            "webhook.USER_REGISTERED",
            None,
            {"webhook_id": "wh-2"},
        )
        assert (third["action"], third["user_ref"], third["account_ref"], third["detail"]) == (
            "webhook.unknown",
            None,
            None,
            {"webhook_id": None},
        )
        assert trail.verify().ok
    finally:
        trail.close()


def test_a_consent_record_as_json_names_its_times_in_iso_8601() -> None:
    granted = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    record = ConsentRecord("u1", "read", granted, granted + timedelta(days=365), "v3", "web", granted, "support")
    document = record.to_json()
    assert document == {
        "user_id": "u1",
        "scope": "read",
        "granted_at": "2026-03-01T12:30:00+00:00",
        "expires_at": "2027-03-01T12:30:00+00:00",
        "disclosure_version": "v3",
        "source": "web",
        "revoked_at": "2026-03-01T12:30:00+00:00",
        "revoked_source": "support",
    }
    assert json.loads(json.dumps(document)) == document
    assert ConsentRecord("u1", "read", granted, granted, "v3", "web").to_json()["revoked_at"] is None


class _Opened(SQLiteDatabase):
    """Stands in for PostgresDatabase: notes what it was opened with, keeps the tables in memory."""

    calls: list[dict[str, Any]] = []

    def __init__(self, conninfo: str, *, what: str, schema: str = "public") -> None:
        _Opened.calls.append({"conninfo": conninfo, "what": what, "schema": schema})
        super().__init__(":memory:", what=what)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    _Opened.calls = []
    monkeypatch.setattr(consent_module, "PostgresDatabase", _Opened)
    monkeypatch.setattr(audit_module, "PostgresDatabase", _Opened)
    return _Opened.calls


def test_the_postgres_stores_open_their_schema_with_their_settings(opened: list[dict[str, Any]]) -> None:
    def clock() -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    seen: list[int] = []
    consents = PostgresConsentStore("postgresql://db/test", max_age_days=30, clock=clock)
    default = PostgresConsentStore("postgresql://db/test")
    trail = PostgresAuditTrail(
        "postgresql://db/test", KEY, schema="tenant_a", on_record=lambda r: seen.append(r.seq), clock=lambda: 5.0
    )
    default_trail = PostgresAuditTrail("postgresql://db/test", KEY)
    try:
        assert opened == [
            {"conninfo": "postgresql://db/test", "what": "consent store", "schema": "public"},
            {"conninfo": "postgresql://db/test", "what": "consent store", "schema": "public"},
            {"conninfo": "postgresql://db/test", "what": "audit trail", "schema": "tenant_a"},
            {"conninfo": "postgresql://db/test", "what": "audit trail", "schema": "public"},
        ]
        assert (consents.max_age, consents.clock) == (timedelta(days=30), clock)
        assert default.max_age == timedelta(days=365)
        assert consents.grant("u1", "read", "v1", "test").granted_at == clock()
        assert trail.append(audit_module.AuditEvent("call", "check")).ts == 5.0
        assert seen == [1]
        assert trail.key is KEY
    finally:
        for store in (consents, default, trail, default_trail):
            store.close()


def test_reprs_and_traits_name_each_store(tmp_path: Path) -> None:
    store = SQLiteConsentStore(tmp_path / "c.db", max_age_days=90)
    trail = SQLiteAuditTrail(tmp_path / "a.db", KEY)
    try:
        description = f"SQLite consent store {str(tmp_path / 'c.db')!r}"
        assert repr(store) == f"SQLiteConsentStore({description!r}, max_age_days=90)"
        trail_description = f"SQLite audit trail {str(tmp_path / 'a.db')!r}"
        assert repr(trail) == f"SQLiteAuditTrail({trail_description!r})"
        # What guardrails read of a store: its kind, and whether it outlives the process.
        assert (trail.kind, trail.persistent, store.kind, store.persistent) == ("sqlite", True, "sqlite", True)
    finally:
        store.close()
        trail.close()
    memory = SQLiteAuditTrail(":memory:", KEY)
    try:
        assert (memory.kind, memory.persistent) == ("sqlite", False)
    finally:
        memory.close()


def test_the_sqlite_stores_use_their_clock_and_hook(tmp_path: Path) -> None:
    def clock() -> datetime:
        return datetime(2026, 5, 1, tzinfo=UTC)

    seen: list[Any] = []
    store = SQLiteConsentStore(tmp_path / "c.db", max_age_days=7, clock=clock)
    trail = SQLiteAuditTrail(tmp_path / "a.db", KEY, on_record=seen.append, clock=lambda: 42.5)
    try:
        record = store.grant("u1", "read", "v1", "web")
        assert (record.granted_at, record.expires_at) == (clock(), clock() + timedelta(days=7))
        appended = trail.append(audit_module.AuditEvent("call", "check"))
        assert appended.ts == 42.5 and seen == [appended]
    finally:
        store.close()
        trail.close()


def test_a_record_as_json_shows_its_time_and_parsed_detail(tmp_path: Path) -> None:
    trail = SQLiteAuditTrail(tmp_path / "a.db", KEY, clock=lambda: 1767225600.5)
    try:
        record = trail.append(audit_module.AuditEvent("call", "check", user_id="u1", detail={"n": 1}))
        document = record.to_json()
        assert document == {
            **{name: getattr(record, name) for name in record.__dataclass_fields__},
            "time": "2026-01-01T00:00:00.500000+00:00",
            "detail": {"n": 1},
        }
        Tamperer(trail).sql("UPDATE {t} SET detail = 'not json'")
        tampered = trail.tail(1)[0]
        assert tampered.to_json() == {**document, "detail": "not json"}  # shown as stored; verify reports it
        assert trail.verify().problem == "altered"
    finally:
        trail.close()
