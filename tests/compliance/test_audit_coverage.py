"""What the audit chain's MAC covers, and what pseudonymisation leaves, as docs/compliance.md says.

- Each record is chained by ``HMAC-SHA256(K, chain_id + prev_mac + record)``: changing any field
  the record holds (its time, kind, action, pseudonyms, outcome, status, request id, attempts,
  duration, detail) or the ``prev_mac`` it names, to another value of the same type, is located
  as ``altered`` at that record; and a record cannot be deleted by relinking its successor to its
  predecessor and renumbering the rest.
- Pseudonymisation blanks the user's clear ids and the ids of the user's accounts wherever they
  appear, records that name only the account included; other users' ids stay; the chain verifies;
  and later records about the user or those accounts are pseudonymous.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from compliance_helpers import Tamperer

from aims_snaptrade.compliance import AuditEvent, AuditKey, SQLiteAuditTrail

KEY = AuditKey("coverage-test-audit-key-0123456789abcdef")
HEAD = "aims_snaptrade_audit_head"


def _filled(path: Path, n: int = 5) -> SQLiteAuditTrail:
    """A trail of ``n`` records with every field set; clear ids blanked (so only the MAC guards the pseudonyms)."""
    trail = SQLiteAuditTrail(path, KEY)
    for i in range(1, n + 1):
        trail.append(
            AuditEvent(
                "call",
                "list_all_user_accounts",
                user_id=f"user-{i}",
                account_id=f"acc-{i}",
                outcome="ok",
                status=200,
                request_id=f"req-{i}",
                attempts=1,
                duration_ms=12.5,
                detail={"n": i},
                pseudonymous=True,
            )
        )
    return trail


# Each column the MAC covers, and another value of the type it holds.
COVERED = {
    "ts": "ts + 1",
    "kind": "'refused'",
    "action": "'delete_snap_trade_user'",
    "user_ref": "'p-' || substr(mac, 1, 32)",
    "account_ref": "'p-' || substr(mac, 1, 32)",
    "outcome": "'SnapTradeServerError'",
    "status": "500",
    "request_id": "'req-forged'",
    "attempts": "3",
    "duration_ms": "99.25",
    "detail": """'{"n":99}'""",
    "prev_mac": "substr(mac, 1, 64)",
}


@pytest.mark.parametrize("column", sorted(COVERED))
def test_a_changed_value_of_any_covered_field_is_an_altered_record(column: str, tmp_path: Path) -> None:
    trail = _filled(tmp_path / "audit.db")
    try:
        assert trail.verify().ok
        t = Tamperer(trail)
        before = t.sql(f"SELECT {column} FROM {{t}} WHERE seq = 3")
        t.sql(f"UPDATE {{t}} SET {column} = {COVERED[column]} WHERE seq = 3")
        assert t.sql(f"SELECT {column} FROM {{t}} WHERE seq = 3") != before
        report = trail.verify()
        assert (report.ok, report.problem, report.position) == (False, "altered", 3), report
    finally:
        trail.close()


def test_a_deletion_cannot_be_hidden_by_relinking_and_renumbering(tmp_path: Path) -> None:
    trail = _filled(tmp_path / "audit.db")
    try:
        t = Tamperer(trail)
        ((mac_2,),) = t.sql("SELECT mac FROM {t} WHERE seq = 2")
        t.delete(3)
        t.sql("UPDATE {t} SET prev_mac = ? WHERE seq = 4", (mac_2,))  # record 4 now names record 2
        t.shift_up(4, by=-1)
        ((last_mac,),) = t.sql("SELECT mac FROM {t} WHERE seq = 4")
        t.sql(f"UPDATE {trail.db.table(HEAD)} SET seq = 4, mac = ?", (last_mac,))
        report = trail.verify()
        assert (report.ok, report.problem, report.position) == (False, "altered", 3), report
    finally:
        trail.close()


def test_pseudonymising_blanks_the_users_account_ids_wherever_they_appear(tmp_path: Path) -> None:
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    try:
        append = trail.append
        append(AuditEvent("call", "get_all_account_positions", user_id="alice", account_id="acc-a"))
        append(AuditEvent("webhook", "webhook.ACCOUNT_HOLDINGS_UPDATED", account_id="acc-a"))  # no user id
        append(AuditEvent("call", "list_all_user_accounts", user_id="alice"))
        append(AuditEvent("call", "get_all_account_positions", user_id="bob", account_id="acc-b"))
        append(AuditEvent("webhook", "webhook.ACCOUNT_HOLDINGS_UPDATED", account_id="acc-b"))
        assert trail.pseudonymise("alice") == 3  # every record that held a clear id of alice's
        rows = [(r.user_id, r.account_id) for r in trail.tail(5)]
        assert rows == [(None, None), (None, None), (None, None), ("bob", "acc-b"), (None, "acc-b")]
        assert trail.verify().ok
        assert trail.pseudonymise("alice") == 0  # nothing clear is left

        # Erased stays erased: later records naming the user or one of the accounts carry pseudonyms only.
        later = append(AuditEvent("webhook", "webhook.ACCOUNT_HOLDINGS_UPDATED", account_id="acc-a"))
        assert (later.account_id, later.account_ref) == (None, KEY.pseudonym("acc-a"))
        again = append(AuditEvent("call", "list_all_user_accounts", user_id="alice", account_id="acc-new"))
        assert (again.user_id, again.account_id, again.user_ref) == (None, None, trail.pseudonym("alice"))
        kept = append(AuditEvent("call", "get_all_account_positions", user_id="bob", account_id="acc-b"))
        assert (kept.user_id, kept.account_id) == ("bob", "acc-b")
        assert trail.verify().ok
    finally:
        trail.close()
