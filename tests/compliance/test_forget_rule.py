"""Each conformance suite's forget rule fails on a store that keeps one row of the forgotten user.

Every store below is a built-in one whose forgetting leaves exactly one row behind (or, for the
audit trail, one clear id): the suite's own ``test_forgetting_a_user_leaves_no_byte_of_the_id``
must fail on it, and pass on the real store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aims_snaptrade.compliance import AuditKey, SQLiteAuditTrail, SQLiteConsentStore
from aims_snaptrade.secrets import SQLiteSecretStore
from aims_snaptrade.sync import SQLiteSyncLedger
from aims_snaptrade.testing.compliance_conformance import AuditTrailConformance, ConsentStoreConformance
from aims_snaptrade.testing.order_intent_store_conformance import OrderIntentStoreConformance
from aims_snaptrade.testing.secret_store_conformance import SecretStoreConformance
from aims_snaptrade.testing.sync_ledger_conformance import SyncLedgerConformance
from aims_snaptrade.trading import SQLiteOrderIntentStore

KEY = AuditKey("forget-rule-audit-key-0123456789abcdef")


class ConsentKeepingOne(SQLiteConsentStore):
    def erase(self, user_id: str) -> int:
        with self.db.transaction(durable=True) as cur:
            keep = cur.execute("SELECT max(id) FROM aims_snaptrade_consents WHERE user_id = ?", (user_id,)).fetchone()
            removed = cur.execute(
                "DELETE FROM aims_snaptrade_consents WHERE user_id = ? AND id != ?", (user_id, keep[0])
            ).rowcount
        return int(removed) + 1  # claims both


class TrailKeepingOne(SQLiteAuditTrail):
    def pseudonymise(self, user_id: str) -> int:
        changed = super().pseudonymise(user_id)
        with self.db.transaction(durable=True) as cur:  # puts one clear id back, as a buggy erasure would leave it
            cur.execute("UPDATE aims_snaptrade_audit SET user_id = ? WHERE seq = 1", (user_id,))
        return changed


class IntentsKeepingOne(SQLiteOrderIntentStore):
    def forget_user(self, user_id: str) -> int:
        doomed = [i.client_order_id for i in self._of_user(user_id)][1:]
        with self._db.transaction(durable=True) as cur:
            for client_order_id in doomed:
                cur.execute(f"DELETE FROM {self._t} WHERE client_order_id = ?", (client_order_id,))
        return len(doomed) + 1


class LedgerKeepingOne(SQLiteSyncLedger):
    def forget_user(self, user_id: str) -> int:
        removed = self._transaction(
            lambda execute: execute(self._sql("DELETE FROM {users} WHERE user_id = ?"), (user_id,))
        )
        return int(removed) + 1  # the account rows stay


class SecretsKeepingOne(SQLiteSecretStore):
    def delete(self, user_id: str) -> bool:
        return True  # says it deleted; the row stays


CASES: list[tuple[type, Any, Any, str]] = [
    (
        ConsentStoreConformance,
        lambda p: ConsentKeepingOne(p / "c.db"),
        lambda p: SQLiteConsentStore(p / "c.db"),
        "store",
    ),
    (
        AuditTrailConformance,
        lambda p: TrailKeepingOne(p / "a.db", KEY),
        lambda p: SQLiteAuditTrail(p / "a.db", KEY),
        "trail",
    ),
    (
        OrderIntentStoreConformance,
        lambda p: IntentsKeepingOne(p / "i.db"),
        lambda p: SQLiteOrderIntentStore(p / "i.db"),
        "store",
    ),
    (SyncLedgerConformance, lambda p: LedgerKeepingOne(p / "l.db"), lambda p: SQLiteSyncLedger(p / "l.db"), "ledger"),
    (SecretStoreConformance, lambda p: SecretsKeepingOne(p / "s.db"), lambda p: SQLiteSecretStore(p / "s.db"), "store"),
]


@pytest.mark.parametrize(("suite", "keeping", "real", "_"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_the_forget_rule_fails_on_a_store_keeping_one_row(suite, keeping, real, _, tmp_path: Path) -> None:
    rule = suite().test_forgetting_a_user_leaves_no_byte_of_the_id
    broken_dir, real_dir = tmp_path / "broken", tmp_path / "real"
    broken_dir.mkdir()
    real_dir.mkdir()
    broken = keeping(broken_dir)
    try:
        with pytest.raises(AssertionError):
            rule(broken, broken_dir)
    finally:
        broken.close()
    store = real(real_dir)
    try:
        rule(store, real_dir)  # the same rule passes on the real store
    finally:
        store.close()
