"""Which writes of the consent store and the audit trail are flushed to disk before they return.

docs/compliance.md: grants, revocations and erasures are durable when they return; the audit
records of secret, consent, data-rights and purge events are durable, reads' records only
committed; the retention sweep and the purge change what a later audit relies on, so they are
durable too, and a purge holds the head's lock (as appends do) while it moves the anchor.
The databases take that as ``transaction(durable=..., lock=...)``; a database that records each
transaction shows what every method asked for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aims_snaptrade._sql.database import SQLiteDatabase
from aims_snaptrade.compliance import AuditEvent, AuditKey, SQLAuditTrail
from aims_snaptrade.compliance.consent import SQLConsentStore

KEY = AuditKey("durability-test-audit-key-0123456789abcdef")


class Recording(SQLiteDatabase):
    """A SQLite database noting each write transaction's durability and lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, what="recorded store")
        self.writes: list[tuple[bool, str | None]] = []

    def transaction(self, *, durable: bool, lock: str | None = None) -> Any:
        self.writes.append((durable, lock))
        return super().transaction(durable=durable, lock=lock)

    def taken(self) -> list[tuple[bool, str | None]]:
        taken, self.writes = self.writes, []
        return taken


def test_every_change_to_consents_is_durable(tmp_path: Path) -> None:
    db = Recording(tmp_path / "consents.db")
    store = SQLConsentStore(db)
    try:
        db.taken()
        old = datetime.now(UTC) - timedelta(days=800)
        store.grant("u1", "read", "v1", "test", granted_at=old)
        store.grant("u2", "read", "v1", "test")
        store.revoke("u2", source="test")
        assert store.sweep(datetime.now(UTC) - timedelta(days=1)) == 1  # u1 lapsed long ago
        assert store.erase("u2") == 1
        assert db.taken() == [(True, None)] * 5
    finally:
        store.close()


def test_audit_durability_follows_the_event_and_purges_hold_the_head(tmp_path: Path) -> None:
    db = Recording(tmp_path / "audit.db")
    trail = SQLAuditTrail(db, KEY)
    try:
        db.taken()
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id="u1", durable=False))
        trail.append(AuditEvent("consent", "consent.grant", user_id="u1"))
        assert db.taken() == [(False, None), (True, None)]
        trail.pseudonymise("u1")
        assert db.taken() == [(True, None)]
        trail.purge(datetime.now(UTC) + timedelta(seconds=1))
        assert db.taken() == [(True, "aims_snaptrade_audit_head"), (True, None)]  # the purge, then its record
    finally:
        trail.close()
