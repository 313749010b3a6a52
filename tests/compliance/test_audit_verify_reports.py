"""``verify()`` reports in full: the problem, the first bad record, how many records checked out
before it, and one line naming it (what ``aims-snaptrade audit verify`` prints), for every kind
of tampering docs/compliance.md lists, malformed rows and a missing or malformed head included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from compliance_helpers import Tamperer, fill

from aims_snaptrade.compliance import AuditEvent, AuditKey, SQLiteAuditTrail, VerifyReport
from aims_snaptrade.compliance.audit import GENESIS, Head, anchor_signature, build_record, verify_chain
from aims_snaptrade.errors import SnapTradeAuditError, SnapTradeValidationError

KEY = AuditKey("verify-reports-audit-key-0123456789abcdef")
HEAD = "aims_snaptrade_audit_head"


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[SQLiteAuditTrail, Tamperer]]:
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    fill(trail, 6)
    yield trail, Tamperer(trail)
    trail.close()


def _renumber_from_4(t: Tamperer) -> None:
    t.shift_up(4)  # records 4-6 become 5-7: a gap at 4


def _copy_past_head(t: Tamperer) -> None:
    t.insert_replay(7, copy_of=6)


def _text_seq_last(t: Tamperer) -> None:
    t.sql("UPDATE {t} SET seq = 'six' WHERE seq = 6")


def _text_seq_middle(t: Tamperer) -> None:
    t.sql("UPDATE {t} SET seq = 'four' WHERE seq = 4")


CASES: dict[str, tuple[Callable[[Tamperer], None], VerifyReport]] = {
    "altered": (
        lambda t: t.alter(3),
        VerifyReport(False, 2, 0, 6, "altered", 3, "record 3 was altered (its MAC does not match its content)"),
    ),
    "the last record altered": (
        lambda t: t.alter(6),
        VerifyReport(False, 5, 0, 6, "altered", 6, "record 6 was altered (its MAC does not match its content)"),
    ),
    "deleted": (
        lambda t: t.delete(3),
        VerifyReport(False, 2, 0, 6, "deleted", 3, "records after 2 are missing (before 4)"),
    ),
    "the tail deleted": (
        lambda t: t.delete(6),
        VerifyReport(False, 5, 0, 6, "deleted", 6, "the last records after 5 are missing (head is 6)"),
    ),
    "forged and inserted": (
        lambda t: t.insert_forged(3),
        VerifyReport(False, 2, 0, 6, "inserted", 3, "record 3 was inserted (its neighbours chain past it)"),
    ),
    "replayed": (
        lambda t: t.insert_replay(3, copy_of=2),
        VerifyReport(False, 2, 0, 6, "inserted", 3, "record 3 is a copy of an earlier record"),
    ),
    "reordered": (
        lambda t: t.swap(3, 4),
        VerifyReport(False, 2, 0, 6, "reordered", 3, "record 3 is out of order (its predecessor comes later)"),
    ),
    "renumbered": (
        _renumber_from_4,
        VerifyReport(False, 3, 0, 6, "altered", 5, "record 5 was renumbered (expected seq 4)"),
    ),
    "past the head": (
        _copy_past_head,
        VerifyReport(False, 6, 0, 6, "inserted", 7, "record 7 lies past the head (seq 6)"),
    ),
    "a text sequence number at the end": (
        _text_seq_last,
        VerifyReport(False, 5, 0, 6, "altered", 6, "record 6: column seq holds a str, not what was written"),
    ),
    "a text sequence number before the end": (
        _text_seq_middle,
        VerifyReport(False, 3, 0, 6, "deleted", 4, "records after 3 are missing (before 5)"),
    ),
    "a text status": (
        lambda t: t.sql("UPDATE {t} SET status = 'ok' WHERE seq = 4"),
        VerifyReport(False, 3, 0, 6, "altered", 4, "record 4: column status holds a str, not what was written"),
    ),
    "an altered record before a malformed one": (
        lambda t: (t.alter(2), t.sql("UPDATE {t} SET attempts = 1.5 WHERE seq = 4")),
        VerifyReport(False, 1, 0, 6, "altered", 2, "record 2 was altered (its MAC does not match its content)"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_kind_of_tampering_is_reported_in_full(case: str, chain: tuple[SQLiteAuditTrail, Tamperer]) -> None:
    trail, t = chain
    tamper, expected = CASES[case]
    tamper(t)
    assert trail.verify() == expected
    assert trail.verify([trail.checkpoint()]) == expected  # a chain that does not verify is reported first


def test_a_first_record_with_a_text_sequence_number_is_located_at_the_anchor(tmp_path: Path) -> None:
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    try:
        fill(trail, 1)
        Tamperer(trail).sql("UPDATE {t} SET seq = 'one'")
        assert trail.verify() == VerifyReport(
            False, 0, 0, 1, "altered", 1, "record 1: column seq holds a str, not what was written"
        )
        with pytest.raises(SnapTradeAuditError) as unreadable:
            trail.tail(1)
        assert unreadable.value.message == (
            "audit record None: column seq holds a str, not what was written; run `aims-snaptrade audit verify`"
        )
    finally:
        trail.close()


@pytest.mark.parametrize("seq", [2, 6])
def test_a_record_at_or_before_the_anchor_is_inserted(seq: int, chain: tuple[SQLiteAuditTrail, Tamperer]) -> None:
    trail, t = chain
    trail.purge(datetime.now(UTC) + timedelta(seconds=1))  # anchor 6, one record (the purge's) at 7
    t.sql("INSERT INTO {t} SELECT ?, ts, kind, action, user_ref, user_id, account_ref, account_id, outcome, status, "
          "request_id, attempts, duration_ms, detail, prev_mac, mac FROM {t} WHERE seq = 7", (seq,))  # fmt: skip
    assert trail.verify() == VerifyReport(
        False, 0, 6, 7, "inserted", seq, f"record {seq} sits before the checkpoint at 6"
    )


def test_a_missing_head_row_is_deleted_at_the_last_record(chain: tuple[SQLiteAuditTrail, Tamperer]) -> None:
    trail, t = chain
    t.sql("UPDATE {t} SET seq = 'x' WHERE seq = 2")  # a malformed number does not count as the last
    t.sql(f"DELETE FROM {trail.db.table(HEAD)}")
    assert trail.verify() == VerifyReport(
        False, 0, 0, 6, "deleted", 6, "the head row is missing (deleted, perhaps with the last records)"
    )
    t.sql("DELETE FROM {t}")
    assert trail.verify() == VerifyReport(
        False, 0, 0, 0, "deleted", 0, "the head row is missing (deleted, perhaps with the last records)"
    )


def test_a_malformed_head_row_is_altered(chain: tuple[SQLiteAuditTrail, Tamperer]) -> None:
    trail, t = chain
    t.sql(f"UPDATE {trail.db.table(HEAD)} SET anchor_seq = 'zero'")
    assert trail.verify() == VerifyReport(
        False, 0, 0, 0, "altered", None, "the head row: column anchor_seq holds a str, not what was written"
    )


def test_verify_takes_one_checkpoint_or_several_and_nothing_else(chain: tuple[SQLiteAuditTrail, Tamperer]) -> None:
    trail, _ = chain
    saved = trail.checkpoint()
    assert trail.verify(saved) == VerifyReport(True, 6, 0, 6)
    assert trail.verify((saved, saved)) == VerifyReport(True, 6, 0, 6)
    with pytest.raises(SnapTradeValidationError) as refused:
        trail.verify([saved, saved.to_json()])  # type: ignore[list-item]
    assert refused.value.message == "checkpoints must be AuditCheckpoint objects, got dict."


def test_an_empty_chain_verifies(tmp_path: Path) -> None:
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    try:
        assert trail.verify() == VerifyReport(True, 0, 0, 0)
        assert trail.verify([trail.checkpoint()]) == VerifyReport(True, 0, 0, 0)
        assert trail.tail() == []
    finally:
        trail.close()


def test_a_genuine_record_of_a_fork_is_a_gap_where_the_chain_stops_following() -> None:
    """Two genuine records chained to the same predecessor (a backup restored and written on, spliced
    in): the second no longer follows the first, and nothing later names its predecessor."""
    first = build_record(KEY, AuditEvent("call", "one"), 1, GENESIS, 1.0)
    second = build_record(KEY, AuditEvent("call", "two"), 2, first.mac, 2.0)
    third = build_record(KEY, AuditEvent("call", "three"), 3, second.mac, 3.0)
    fork = build_record(KEY, AuditEvent("call", "three, elsewhere"), 3, second.mac, 3.5)
    records = [first, second, fork, dataclasses.replace(third, seq=4)]
    head = Head(4, third.mac, 0, GENESIS, anchor_signature(KEY, 0, GENESIS))
    assert verify_chain(KEY, head, records) == VerifyReport(
        False, 3, 0, 4, "deleted", 4, "records after 3 are missing (before 4)"
    )


def test_reading_an_unreadable_record_names_it(chain: tuple[SQLiteAuditTrail, Tamperer]) -> None:
    trail, t = chain
    t.sql("UPDATE {t} SET status = 'ok' WHERE seq = 4")
    with pytest.raises(SnapTradeAuditError) as unreadable:
        trail.tail(3)
    assert unreadable.value.message == (
        "audit record 4: column status holds a str, not what was written; run `aims-snaptrade audit verify`"
    )
    with pytest.raises(SnapTradeAuditError, match=r"^audit record 4: column status"):
        trail.records_for_user("user-1")


def test_a_head_without_its_first_bound_record_reads_as_bound_from_the_start(
    chain: tuple[SQLiteAuditTrail, Tamperer],
) -> None:
    """A head row whose bound_from is empty (written before the column existed) binds every record."""
    trail, t = chain
    t.sql(f"UPDATE {trail.db.table(HEAD)} SET bound_from = NULL")
    assert trail.head().bound_from == 1
    assert trail.verify() == VerifyReport(True, 6, 0, 6)


def test_a_forged_record_appended_with_the_head_count_moved_is_inserted(
    chain: tuple[SQLiteAuditTrail, Tamperer],
) -> None:
    """Without the key the head's MAC cannot be moved along: it still names record 6 as the last."""
    trail, t = chain
    t.insert_forged(7)
    t.sql(f"UPDATE {trail.db.table(HEAD)} SET seq = 7")
    assert trail.verify() == VerifyReport(
        False, 6, 0, 7, "inserted", 7, "record 7 was inserted (its neighbours chain past it)"
    )


def test_records_cut_back_to_the_anchor_with_the_heads_mac_rewound_are_deleted(
    chain: tuple[SQLiteAuditTrail, Tamperer],
) -> None:
    """The head still counts six records: an anchor's MAC in its place does not make an empty chain."""
    trail, t = chain
    t.sql("DELETE FROM {t}")
    t.sql(f"UPDATE {trail.db.table(HEAD)} SET mac = ?", (GENESIS,))
    assert trail.verify() == VerifyReport(
        False, 0, 0, 6, "deleted", 1, "the last records after 0 are missing (head is 6)"
    )


def test_a_malformed_record_after_a_gap_is_named_by_its_own_number(
    chain: tuple[SQLiteAuditTrail, Tamperer],
) -> None:
    trail, t = chain
    t.delete(4)
    t.sql("UPDATE {t} SET status = 'ok' WHERE seq = 5")
    assert trail.verify() == VerifyReport(
        False, 3, 0, 6, "altered", 5, "record 5: column status holds a str, not what was written"
    )
