"""What verify, checkpoints and purges report, in full, as docs/compliance.md describes them.

- ``verify(checkpoints)`` checks the chain, then each checkpoint in turn, and reports the first
  one it contradicts: ``checkpoint`` (not signed by this key), ``replaced`` (another chain),
  ``rewound`` (the chain ends before it) or ``forked`` (another record at its sequence number),
  with the records checked, the anchor and head, the position and a message naming the
  checkpoint's time; a checkpoint older than the anchor (purged since) has nothing left to
  compare and passes.
- A checkpoint line (``to_json``) reads back with ``from_json`` and still verifies; a malformed
  line is a :class:`SnapTradeValidationError` naming the field.
- ``purge(before)`` removes exactly the records older than ``before``, moves the signed anchor to
  the last one removed, records the purge (removed, anchor) and leaves a chain that verifies,
  also on a chain from before chain identities; it refuses a chain that does not verify, naming
  the problem, and a naive ``before``.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import pytest
from compliance_helpers import Tamperer, fill

from aims_snaptrade.compliance import AuditCheckpoint, AuditEvent, AuditKey, SQLiteAuditTrail, VerifyReport
from aims_snaptrade.compliance.audit import GENESIS, anchor_signature, build_record
from aims_snaptrade.errors import SnapTradeAuditError, SnapTradeValidationError

KEY = AuditKey("reports-test-audit-key-0123456789abcdef")
HEAD = "aims_snaptrade_audit_head"


class Ticks:
    """A clock for the trail: seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_767_225_600.25) -> None:  # 2026-01-01T00:00:00.25Z
        self.now = now

    def __call__(self) -> float:
        return self.now


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@pytest.fixture
def trail(tmp_path: Path) -> Any:
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY, clock=Ticks())
    yield trail
    trail.close()


def _signed(chain_id: str, seq: int, mac: str, at: float) -> AuditCheckpoint:
    """A checkpoint signed with the key (as one taken of another database under the same key)."""
    return AuditCheckpoint(chain_id, seq, mac, at, KEY.mac(AuditCheckpoint.message(chain_id, seq, mac, at)))


# --- checkpoints: each contradiction reported in full --------------------------------------------


def test_a_checkpoint_not_signed_by_this_key_is_reported_at_its_seq(trail: SQLiteAuditTrail) -> None:
    fill(trail, 4)
    saved = trail.checkpoint()
    forged = dataclasses.replace(saved, seq=2)
    report = trail.verify([forged])
    assert report == VerifyReport(
        False,
        4,
        0,
        4,
        "checkpoint",
        2,
        f"the checkpoint of {_iso(saved.time)} is not signed by this key (forged or altered)",
    )


def test_another_chains_checkpoint_is_replaced(trail: SQLiteAuditTrail) -> None:
    fill(trail, 3)
    saved = trail.checkpoint()
    other = _signed("0f0f0f0f-another-chain", saved.seq, saved.mac, saved.time)
    report = trail.verify([saved, other])
    assert report == VerifyReport(
        False,
        3,
        0,
        3,
        "replaced",
        None,
        f"this database holds chain {saved.chain_id}, not chain 0f0f0f0f-another-chain of the checkpoint of "
        f"{_iso(saved.time)} (another database's chain, or the head was deleted and recreated)",
    )


def test_a_chain_cut_before_a_checkpoint_is_rewound_after_its_last_record(trail: SQLiteAuditTrail) -> None:
    fill(trail, 6)
    saved = trail.checkpoint()
    t = Tamperer(trail)
    ((mac,),) = t.sql("SELECT mac FROM {t} WHERE seq = 4")
    t.sql("DELETE FROM {t} WHERE seq > 4")
    t.sql(f"UPDATE {trail.db.table(HEAD)} SET seq = 4, mac = ?", (mac,))
    report = trail.verify([saved])
    assert report == VerifyReport(
        False,
        4,
        0,
        4,
        "rewound",
        5,
        f"the chain ends at seq 4 but the checkpoint of {_iso(saved.time)} saw seq 6: records after 4 were cut "
        "(truncation, a rewound head or an older backup restored)",
    )


def test_another_record_at_a_checkpoints_seq_is_forked(trail: SQLiteAuditTrail) -> None:
    fill(trail, 3)
    saved = trail.checkpoint()
    fill(trail, 2)
    report = trail.verify([dataclasses.replace(saved)])
    assert report.ok
    other = _signed(saved.chain_id, 2, saved.mac, saved.time)  # record 2 is not the head record 3
    report = trail.verify([saved, other])
    assert report == VerifyReport(
        False,
        5,
        0,
        5,
        "forked",
        2,
        f"record 2 is not the one the checkpoint of {_iso(saved.time)} saw (a backup restored and written on, "
        "or a rewritten chain)",
    )


def test_checkpoints_older_than_the_anchor_pass_and_one_at_the_anchor_is_compared(trail: SQLiteAuditTrail) -> None:
    clock = trail.clock
    assert isinstance(clock, Ticks)
    fill(trail, 2)
    old = trail.checkpoint()
    fill(trail, 2)
    at_anchor = trail.checkpoint()
    clock.now += 10
    purged = trail.purge(datetime.fromtimestamp(clock.now - 5, UTC))
    assert (purged.removed, purged.anchor_seq) == (4, 4)
    assert trail.verify([old, at_anchor]).ok  # 2 lies before the anchor; 4 is the anchor itself
    wrong = _signed(at_anchor.chain_id, 4, old.mac, at_anchor.time)
    report = trail.verify([old, wrong])  # the purged one passes, the next is still compared
    assert (report.ok, report.problem, report.position, report.anchor_seq, report.head_seq) == (
        False,
        "forked",
        4,
        4,
        5,
    )


# --- checkpoint lines --------------------------------------------------------------------------


def test_a_checkpoint_line_reads_back_and_still_verifies(trail: SQLiteAuditTrail) -> None:
    clock = trail.clock
    assert isinstance(clock, Ticks)
    fill(trail, 2)
    clock.now = 1_767_225_600.1234567  # more digits than a microsecond
    saved = trail.checkpoint()
    assert saved.time == pytest.approx(clock.now, abs=1e-6)
    line = saved.to_json()
    assert line == {
        "chain_id": saved.chain_id,
        "seq": 2,
        "mac": saved.mac,
        "time": saved.time,
        "signature": saved.signature,
        "at": "2026-01-01T00:00:00.123457+00:00",
    }
    assert datetime.fromisoformat(line["at"]).timestamp() == saved.time  # the line names its exact instant
    read = AuditCheckpoint.from_json(json.loads(json.dumps(line)))
    assert read == saved
    assert trail.verify([read]).ok
    whole = AuditCheckpoint.from_json({**line, "time": 1_767_225_600})  # a time without a fraction
    assert isinstance(whole.time, float) and whole.time == 1_767_225_600.0


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"chain_id": None}, "chain_id", "str"),
        ({"seq": "2"}, "seq", "int"),
        ({"seq": True}, "seq", "int"),
        ({"mac": 7}, "mac", "str"),
        ({"time": "now"}, "time", "int"),
        ({"time": False}, "time", "int"),
        ({"signature": None}, "signature", "str"),
    ],
)
def test_a_malformed_checkpoint_line_names_the_field(change: dict[str, Any], field: str, kind: str) -> None:
    line = {"chain_id": "c", "seq": 2, "mac": "m", "time": 1.5, "signature": "s", **change}
    with pytest.raises(SnapTradeValidationError) as refused:
        AuditCheckpoint.from_json(line)
    assert refused.value.message == f"the checkpoint's {field!r} is missing or not a {kind}."
    assert refused.value.hint == "Use a line written by `aims-snaptrade audit checkpoint`."
    missing = {k: v for k, v in line.items() if k != field}
    with pytest.raises(SnapTradeValidationError, match=f"'{field}' is missing"):
        AuditCheckpoint.from_json(missing)


def test_a_checkpoint_line_must_be_an_object() -> None:
    with pytest.raises(SnapTradeValidationError, match="a checkpoint must be a JSON object, got list"):
        AuditCheckpoint.from_json([1, 2])


# --- purge -------------------------------------------------------------------------------------


def test_purge_removes_exactly_the_older_records_and_records_itself(trail: SQLiteAuditTrail) -> None:
    clock = trail.clock
    assert isinstance(clock, Ticks)
    for _ in range(5):
        fill(trail, 1)
        clock.now += 60
    cut = datetime.fromtimestamp(trail.tail(5)[3].ts, UTC)  # records 1-3 are older, 4 is at the cut
    report = trail.purge(cut)
    assert (report.removed, report.anchor_seq) == (3, 3)
    assert [r.seq for r in trail.tail(10)] == [4, 5, 6]
    record = trail.tail(1)[0]
    assert (record.kind, record.action, json.loads(record.detail)) == (
        "audit",
        "audit.purge",
        {"removed": 3, "anchor_seq": 3},
    )
    head = trail.head()
    assert (head.anchor_seq, head.seq) == (3, 6)
    verified = trail.verify()
    assert (verified.ok, verified.checked, verified.anchor_seq, verified.head_seq) == (True, 3, 3, 6)
    again = trail.purge(cut)  # nothing older is left: the anchor stays
    assert (again.removed, again.anchor_seq) == (0, 3)
    assert trail.tail(1)[0].seq == 6  # and nothing was recorded


def test_purge_refuses_a_chain_that_does_not_verify_naming_the_problem(trail: SQLiteAuditTrail) -> None:
    fill(trail, 4)
    Tamperer(trail).alter(2)
    with pytest.raises(SnapTradeAuditError) as refused:
        trail.purge(datetime.now(UTC))
    assert refused.value.message.startswith(
        "refusing to purge an audit chain that does not verify: record 2 was altered"
    )
    assert trail.count() == 4


class _NoOffset(tzinfo):
    """A time zone that names no offset: a datetime in it is as naive as one without."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


@pytest.mark.parametrize("before", [datetime(2030, 1, 1), datetime(2030, 1, 1, tzinfo=_NoOffset()), "2030-01-01", 1.0])
def test_purge_needs_an_aware_datetime(trail: SQLiteAuditTrail, before: Any) -> None:
    fill(trail, 2)
    with pytest.raises(SnapTradeValidationError) as refused:
        trail.purge(before)
    assert refused.value.message == "purge(before) needs a timezone-aware datetime (e.g. datetime.now(UTC))."
    assert trail.count() == 2


def test_purging_a_chain_from_before_chain_identities_keeps_it_verifying(tmp_path: Path) -> None:
    """A legacy chain is bound to its identity from a later record on: the purge's anchor says from which."""
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
        prev = GENESIS
        for seq in range(1, 4):
            r = build_record(KEY, AuditEvent("call", "list_all_user_accounts", user_id="old-user"), seq, prev, 1e9)
            conn.execute(f"INSERT INTO aims_snaptrade_audit VALUES ({', '.join('?' * 16)})", tuple(r.__dict__.values()))
            prev = r.mac
        conn.execute(
            "INSERT INTO aims_snaptrade_audit_head VALUES (1, 3, ?, 0, ?, ?)",
            (prev, GENESIS, anchor_signature(KEY, 0, GENESIS)),
        )
    trail = SQLiteAuditTrail(db, KEY, clock=lambda: 2e9)
    try:
        assert trail.head().bound_from == 4
        fill(trail, 2)
        report = trail.purge(datetime.fromtimestamp(1.5e9, UTC))  # the three legacy records
        assert (report.removed, report.anchor_seq) == (3, 3)
        assert trail.verify().ok
        assert trail.verify([trail.checkpoint()]).ok
    finally:
        trail.close()


# --- the head, and what a trail without one says -------------------------------------------------


def test_a_missing_or_malformed_head_is_an_audit_error_naming_it(trail: SQLiteAuditTrail) -> None:
    fill(trail, 2)
    t = Tamperer(trail)
    t.sql(f"UPDATE {trail.db.table(HEAD)} SET anchor_seq = 'zero'")
    with pytest.raises(SnapTradeAuditError) as malformed:
        trail.head()
    assert malformed.value.message == (
        "the audit head row: column anchor_seq holds a str, not what was written; run `aims-snaptrade audit verify`"
    )
    with pytest.raises(SnapTradeAuditError, match="the audit head row: column anchor_seq holds a str"):
        trail.checkpoint()
    t.sql(f"DELETE FROM {trail.db.table(HEAD)}")
    with pytest.raises(SnapTradeAuditError) as missing:
        trail.head()
    assert missing.value.message == "the audit head row is missing; run `aims-snaptrade audit verify`"


def test_a_chain_without_an_identity_cannot_be_checkpointed(trail: SQLiteAuditTrail) -> None:
    Tamperer(trail).sql(f"UPDATE {trail.db.table(HEAD)} SET chain_id = NULL")
    with pytest.raises(SnapTradeAuditError) as refused:
        trail.checkpoint()
    assert refused.value.message == "this audit chain has no identity yet; open it with this version first"


def test_reprs_hide_the_key_and_name_the_store(trail: SQLiteAuditTrail, tmp_path: Path) -> None:
    assert repr(KEY) == "AuditKey(<hidden>)"
    assert repr(trail) == f"SQLiteAuditTrail({trail.db.description!r})"
    assert str(tmp_path / "audit.db") in repr(trail)
