"""Opening an audit trail: a new chain gets its identity and a signed genesis head; a chain from
before chain identities gets one, its anchor re-signed only when the old signature holds (a forged
one stays visible); a deleted head row is never recreated over remaining records."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from compliance_helpers import Tamperer, fill

from aims_snaptrade.compliance import AuditEvent, AuditKey, SQLiteAuditTrail, VerifyReport
from aims_snaptrade.compliance.audit import GENESIS, Head, anchor_signature, build_record
from aims_snaptrade.errors import SnapTradeAuditError

KEY = AuditKey("opening-test-audit-key-0123456789abcdef")
HEAD = "aims_snaptrade_audit_head"


def test_a_new_chain_has_an_identity_and_a_signed_genesis_head(tmp_path: Path) -> None:
    trail = SQLiteAuditTrail(tmp_path / "a.db", KEY)
    other = SQLiteAuditTrail(tmp_path / "b.db", KEY)
    try:
        head = trail.head()
        assert head.chain_id is not None and str(uuid.UUID(head.chain_id)) == head.chain_id
        assert head == Head(
            0, GENESIS, 0, GENESIS, anchor_signature(KEY, 0, GENESIS, head.chain_id, 1), head.chain_id, 1
        )
        assert head.anchor_sig == anchor_signature(KEY, 0, GENESIS, head.chain_id)  # bound from the first record
        assert other.head().chain_id != head.chain_id  # every database its own chain
        fill(trail, 2)
    finally:
        trail.close()
        other.close()
    again = SQLiteAuditTrail(tmp_path / "a.db", KEY)
    try:
        assert again.head().chain_id == head.chain_id and again.head().seq == 2  # reopening keeps it
        assert again.verify().ok
    finally:
        again.close()


def test_a_deleted_head_row_is_not_recreated_over_remaining_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trail = SQLiteAuditTrail(tmp_path / "a.db", KEY)
    fill(trail, 3)
    Tamperer(trail).sql(f"DELETE FROM {trail.db.table(HEAD)}")
    trail.close()
    with caplog.at_level(logging.ERROR, logger="aims_snaptrade.audit"):
        reopened = SQLiteAuditTrail(tmp_path / "a.db", KEY)
    try:
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
            "the audit head row is missing while records remain; run `aims-snaptrade audit verify`"
        ]
        assert reopened.verify().problem == "deleted"
        with pytest.raises(SnapTradeAuditError) as refused:
            reopened.append(AuditEvent("call", "check"))
        assert refused.value.message == (
            "the audit head row is missing (deleted): nothing was appended; run `aims-snaptrade audit verify`"
        )
        assert reopened.count() == 3
        Tamperer(reopened).sql("DELETE FROM {t}")  # nothing left: the next start makes a new, empty chain
    finally:
        reopened.close()
    fresh = SQLiteAuditTrail(tmp_path / "a.db", KEY)
    try:
        assert fresh.verify() == VerifyReport(True, 0, 0, 0)
        assert fresh.head().chain_id is not None
    finally:
        fresh.close()


def _legacy(db: Path, *, anchor_seq: int, anchor_sig: str | None = None) -> str:
    """A database of the previous release (no chain identity), records after ``anchor_seq`` up to 5."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TABLE aims_snaptrade_audit (seq BIGINT PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, "
            "action TEXT NOT NULL, user_ref TEXT, user_id TEXT, account_ref TEXT, account_id TEXT, outcome TEXT NOT "
            "NULL, status INTEGER, request_id TEXT, attempts INTEGER NOT NULL, duration_ms REAL, detail TEXT NOT NULL, "
            "prev_mac TEXT NOT NULL, mac TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE aims_snaptrade_audit_head (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, mac TEXT NOT NULL, "
            "anchor_seq BIGINT NOT NULL, anchor_mac TEXT NOT NULL, anchor_sig TEXT NOT NULL)"
        )
        prev, anchor_mac = GENESIS, GENESIS
        for seq in range(1, 6):
            r = build_record(KEY, AuditEvent("call", "list_all_user_accounts", user_id="old-user"), seq, prev, 1e9)
            if seq > anchor_seq:  # the older ones were purged
                conn.execute(
                    f"INSERT INTO aims_snaptrade_audit VALUES ({', '.join('?' * 16)})", tuple(r.__dict__.values())
                )
            if seq == anchor_seq:
                anchor_mac = r.mac
            prev = r.mac
        signature = anchor_signature(KEY, anchor_seq, anchor_mac) if anchor_sig is None else anchor_sig
        conn.execute(
            "INSERT INTO aims_snaptrade_audit_head VALUES (1, 5, ?, ?, ?, ?)", (prev, anchor_seq, anchor_mac, signature)
        )
    return anchor_mac


def test_a_purged_chain_from_before_identities_is_re_anchored_and_verifies(tmp_path: Path) -> None:
    anchor_mac = _legacy(tmp_path / "old.db", anchor_seq=2)
    trail = SQLiteAuditTrail(tmp_path / "old.db", KEY)
    try:
        head = trail.head()
        assert head.chain_id is not None
        assert (head.seq, head.anchor_seq, head.anchor_mac, head.bound_from) == (5, 2, anchor_mac, 6)
        assert head.anchor_sig == anchor_signature(KEY, 2, anchor_mac, head.chain_id, 6)
        assert trail.verify() == VerifyReport(True, 3, 2, 5)
        fill(trail, 1)  # seq 6: the first record bound to the identity
        assert trail.verify() == VerifyReport(True, 4, 2, 6)
    finally:
        trail.close()


def test_a_forged_anchor_of_an_old_chain_stays_visible(tmp_path: Path) -> None:
    _legacy(tmp_path / "old.db", anchor_seq=2, anchor_sig="f" * 64)
    trail = SQLiteAuditTrail(tmp_path / "old.db", KEY)
    try:
        assert trail.head().anchor_sig == "f" * 64  # not re-signed: that would launder the forgery
        assert trail.verify() == VerifyReport(
            False,
            0,
            2,
            5,
            "checkpoint",
            2,
            "the checkpoint at seq 2 is not signed by this key (a wrong SNAPTRADE_AUDIT_KEY, or a forged purge)",
        )
    finally:
        trail.close()


def test_a_failing_record_hook_is_logged_naming_the_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def hook(record: object) -> None:
        raise RuntimeError("the log pipeline is down")

    trail = SQLiteAuditTrail(tmp_path / "a.db", KEY, on_record=hook)
    try:
        with caplog.at_level(logging.ERROR, logger="aims_snaptrade.audit"):
            record = trail.append(AuditEvent("call", "check"))
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
            "the audit on_record hook failed for record 1 (the record is stored)"
        ]
        assert next(r for r in caplog.records if r.levelno >= logging.ERROR).exc_info is not None
        assert trail.tail(1) == [record]
    finally:
        trail.close()
