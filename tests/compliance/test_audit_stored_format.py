"""A chain stored by this release keeps verifying: the MAC, pseudonym, anchor and checkpoint formats
are an on-disk contract (docs/compliance.md: records MACed under a key verify only with it, a
restored backup that verifies is the same chain, checkpoints are kept outside the database for
as long as the records). The rows below were written by this release under ``SECRET``; any
change to how a MAC, a pseudonym, an anchor or a checkpoint signature is computed, or to how an
event is put into its canonical stored form, makes them stop verifying.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from aims_snaptrade.compliance import AuditCheckpoint, AuditEvent, AuditKey, SQLiteAuditTrail

SECRET = "golden-chain-audit-key-0123456789abcdef"
CHAIN = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
GENESIS = "0" * 64
USER_REF = "p-cca7e1cf65fe5ec59326f9fdeededb4b"  # user-42
ACCOUNT_REF = "p-434043940e6cdd03693639cd87a7c293"  # acc-7
MACS = (
    "3a94ac0b9daa940ac19fd7eecad4b3749b30dc720035e462a37a9ab7403baf97",
    "bf6931c521e406f8e4088e3a156d42a6a53dc867059d41bcbdbfc2de9f623681",
    "877d29bc25d7da74628e007c11e9cc49e60cf53a50a4eb7d02f9d84003ef5923",
)
RECORDS = (
    # A call with every field, a webhook naming only an account, a refusal after erasure (pseudonyms only).
    (1, 1767225600.5, "call", "get_all_account_positions", USER_REF, "user-42", ACCOUNT_REF, "acc-7", "ok", 200,
     "req-9f1", 1, 12.5, '{"scope":"read"}', GENESIS, MACS[0]),
    (2, 1767225601.25, "webhook", "webhook.ACCOUNT_HOLDINGS_UPDATED", None, None, ACCOUNT_REF, "acc-7", "ok", None,
     None, 0, None, '{"webhook_id":"wh-1"}', MACS[0], MACS[1]),
    (3, 1767225602.0, "refused", "list_all_user_accounts", USER_REF, None, None, None, "SnapTradeConsentRequiredError",
     None, None, 0, None, '{"reason":"expired","scope":"read"}', MACS[1], MACS[2]),
)  # fmt: skip
ANCHOR_SIG = "3225cca37bcce824030fe8c5981f1843f5c2de279903b9ed45083460228ec606"
CHECKPOINT = {
    "chain_id": CHAIN,
    "seq": 3,
    "mac": MACS[2],
    "time": 1767225700.25,
    "signature": "1145520a8fbe685863ba3bfc567f6e95783333cbecb07d2898a29407dffc5d72",
    "at": "2026-01-01T00:01:40.250000+00:00",
}
# The record this release appends next for one event, at a clock of 1767225603.1234567.
NEXT = (4, 1767225603.123457, "consent", "consent.grant", "p-92e751bfccb6cb385a55d0564a090da8", "user-43", None, None,
        "ok", None, None, 0, 7.0, '{"b":9007199254740992,"disclosure_version":"2026-03","scope":"trade"}', MACS[2],
        "091f656921d0b69be87a1d1cf5602a461569828ac54427da17f1c737f7884d33")  # fmt: skip


def _stored(path: Path, clock: float = 1767225603.1234567) -> SQLiteAuditTrail:
    """The golden chain in a database of this release's schema, opened again."""
    SQLiteAuditTrail(path, AuditKey(SECRET)).close()  # the tables (and a head to replace)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM aims_snaptrade_audit_head")
        conn.execute(
            "INSERT INTO aims_snaptrade_audit_head (id, seq, mac, anchor_seq, anchor_mac, anchor_sig, chain_id, "
            "bound_from) VALUES (1, 3, ?, 0, ?, ?, ?, 1)",
            (MACS[2], GENESIS, ANCHOR_SIG, CHAIN),
        )
        conn.executemany(f"INSERT INTO aims_snaptrade_audit VALUES ({', '.join('?' * 16)})", RECORDS)
    return SQLiteAuditTrail(path, AuditKey(SECRET), clock=lambda: clock)


def test_a_stored_chain_and_its_checkpoint_keep_verifying(tmp_path: Path) -> None:
    trail = _stored(tmp_path / "audit.db")
    try:
        report = trail.verify([AuditCheckpoint.from_json(CHECKPOINT)])
        assert (report.ok, report.checked, report.anchor_seq, report.head_seq) == (True, 3, 0, 3), report
        assert [tuple(r.__dict__.values()) for r in trail.tail(3)] == list(RECORDS)
        assert [r.seq for r in trail.records_for_user("user-42")] == [1, 3]  # found by pseudonym, also erased ones
        assert trail.pseudonym("user-42") == USER_REF
    finally:
        trail.close()


def test_the_next_record_is_written_in_the_same_form(tmp_path: Path) -> None:
    trail = _stored(tmp_path / "audit.db")
    try:
        event = AuditEvent(
            "consent",
            "consent.grant",
            user_id="user-43",
            duration_ms=7.0004,
            detail={"scope": "trade", "disclosure_version": "2026-03", "b": 2**53},
        )
        record = trail.append(event)
        assert tuple(record.__dict__.values()) == NEXT
        assert trail.verify([AuditCheckpoint.from_json(CHECKPOINT)]).ok
        assert trail.checkpoint().chain_id == CHAIN
    finally:
        trail.close()


def test_the_stored_chain_does_not_verify_under_another_key(tmp_path: Path) -> None:
    _stored(tmp_path / "audit.db").close()
    other = SQLiteAuditTrail(tmp_path / "audit.db", AuditKey(SECRET.upper()))
    try:
        assert other.verify().problem == "checkpoint"
    finally:
        other.close()
    padded = SQLiteAuditTrail(tmp_path / "audit.db", AuditKey(f"  {SECRET}\n"))  # surrounding blanks are not key
    try:
        assert padded.verify().ok
    finally:
        padded.close()


# A record of the release before chain identities (schema 1: no chain id in its MAC or the head).
LEGACY = (1, 1700000000.25, "call", "list_all_user_accounts", "p-c5befaadc0f858bb08d94fec29eef228", "old-user", None,
          None, "ok", 200, None, 0, None, "{}", GENESIS,
          "b1f5698f6f0c8067668afc0ffec5f68eac50699f2852d6780a0aaadbee601df8")  # fmt: skip
LEGACY_ANCHOR_SIG = "9c653655d4f55fbd362a5dfa20885168eaf2e002d15509343672dccc07a55e3b"


def test_a_chain_stored_before_chain_identities_keeps_verifying(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
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
        conn.execute(f"INSERT INTO aims_snaptrade_audit VALUES ({', '.join('?' * 16)})", LEGACY)
        conn.execute(
            "INSERT INTO aims_snaptrade_audit_head VALUES (1, 1, ?, 0, ?, ?)", (LEGACY[-1], GENESIS, LEGACY_ANCHOR_SIG)
        )
    trail = SQLiteAuditTrail(db, AuditKey(SECRET))
    try:
        assert trail.verify().ok
        assert [r.seq for r in trail.records_for_user("old-user")] == [1]
    finally:
        trail.close()
