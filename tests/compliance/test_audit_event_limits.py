"""The limits docs/compliance.md gives for audit input, at their edges: the last value accepted and
the first refused (:class:`SnapTradeValidationError` naming the field), and the one canonical
form an accepted event is stored in; the audit key's minimum length; ``tail``'s limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aims_snaptrade.compliance import AuditEvent, AuditKey, SQLiteAuditTrail
from aims_snaptrade.compliance.audit import build_record, check_event
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeValidationError
from aims_snaptrade.redaction import redact

KEY = AuditKey("limits-test-audit-key-0123456789abcdef")


def _detail_of_json_length(length: int) -> dict[str, Any]:
    """Four entries whose compact JSON is exactly ``length`` characters (each value within 1,024)."""
    detail = {f"k{i}": "v" * 1024 for i in range(3)}
    detail["k3"] = "v" * (length - len(json.dumps({**detail, "k3": ""}, separators=(",", ":"))))
    assert len(json.dumps(detail, separators=(",", ":"))) == length
    return detail


# field -> (the last accepted values, the first refused value, the message naming it)
EDGES: dict[str, tuple[tuple[Any, ...], Any, str]] = {
    "kind": (("k" * 64,), "k" * 65, "kind has 65 characters; at most 64 are accepted."),
    "action": (("a" * 256,), "a" * 257, "action has 257 characters; at most 256 are accepted."),
    "outcome": (("o" * 256,), "o" * 257, "outcome has 257 characters; at most 256 are accepted."),
    "user_id": (("u" * 1024,), "u" * 1025, "user_id has 1025 characters; at most 1024 are accepted."),
    "account_id": (("a" * 1024,), 7, "account_id must be a string, got int."),
    "request_id": (("r" * 1024,), "", "request_id must be a non-empty identifier."),
    "status": ((0, 999, None), 1000, "status must be an HTTP status (an int 0-999) or None, got 1000."),
    "attempts": ((0, 10_000), 10_001, "attempts must be an int 0-10000, got 10001."),
    "duration_ms": ((0, 1e12, None), 1.000001e12, "duration_ms must be a finite number between 0 and 1e+12."),
    "durable": ((True, False), 1, "durable must be True or False."),
    "pseudonymous": ((True, False), None, "pseudonymous must be True or False."),
}
MORE_REFUSED: list[tuple[str, Any, str]] = [
    ("status", -1, "status must be an HTTP status (an int 0-999) or None, got -1."),
    ("status", True, "status must be an HTTP status (an int 0-999) or None, got True."),
    ("status", "200", "status must be an HTTP status (an int 0-999) or None, got '200'."),
    ("attempts", -1, "attempts must be an int 0-10000, got -1."),
    ("attempts", True, "attempts must be an int 0-10000, got True."),
    ("attempts", 1.0, "attempts must be an int 0-10000, got 1.0."),
    ("duration_ms", -0.001, "duration_ms must be a finite number between 0 and 1e+12."),
    ("duration_ms", 1e12 + 0.5, "duration_ms must be a finite number between 0 and 1e+12."),
    ("detail", [("a", 1)], "detail must be a mapping, got list."),
    ("detail", {f"k{i}": i for i in range(33)}, "detail has 33 entries; at most 32."),
    ("detail", {"k" * 65: 1}, "a detail key has 65 characters; at most 64 are accepted."),
    ("detail", {"x": 2**53 + 1}, "detail['x'] is an integer beyond +-2**53 (JSON numbers lose it)."),
    ("detail", {"x": -(2**53) - 1}, "detail['x'] is an integer beyond +-2**53 (JSON numbers lose it)."),
    ("detail", {"x": 1.01e15}, "detail['x'] must be a finite number between -1e+15 and 1e+15."),
    ("detail", {"x": 1e15 + 0.5}, "detail['x'] must be a finite number between -1e+15 and 1e+15."),
    ("detail", {"x": -1e15 - 0.5}, "detail['x'] must be a finite number between -1e+15 and 1e+15."),
    ("detail", {"x": "s" * 1025}, "detail['x'] has 1025 characters; at most 1024 are accepted."),
    ("detail", {"x": [1]}, "detail['x'] must be a string, number, bool or None, got list."),
    ("detail", _detail_of_json_length(4097), "detail is longer than 4096 characters as JSON."),
]
ACCEPTED_DETAILS = [
    {f"k{i}": i for i in range(32)},
    {"k" * 64: 2**53, "n": -(2**53), "f": 1e15, "g": -1e15, "s": "s" * 1024, "e": "", "b": False, "none": None},
    _detail_of_json_length(4096),
]


@pytest.mark.parametrize("field", sorted(EDGES))
def test_each_field_accepts_up_to_its_limit_and_names_itself_past_it(field: str) -> None:
    accepted, refused, message = EDGES[field]
    for value in accepted:
        check_event(AuditEvent(**{"kind": "call", "action": "check", field: value}))
    with pytest.raises(SnapTradeValidationError) as error:
        check_event(AuditEvent(**{"kind": "call", "action": "check", field: refused}))
    assert error.value.message == message


@pytest.mark.parametrize(("field", "value", "message"), MORE_REFUSED, ids=[m for _, _, m in MORE_REFUSED])
def test_malformed_values_are_refused_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(SnapTradeValidationError) as error:
        check_event(AuditEvent("call", "check", **{field: value}))
    assert error.value.message == message


@pytest.mark.parametrize("detail", ACCEPTED_DETAILS, ids=["32 entries", "edge values", "4096 characters"])
def test_details_at_their_limits_are_stored_as_given(detail: dict[str, Any]) -> None:
    event = check_event(AuditEvent("call", "check", detail=detail))
    assert dict(event.detail) == detail
    record = build_record(KEY, event, 1, "0" * 64, 1.0)
    assert json.loads(record.detail) == detail


def test_only_an_audit_event_is_appended() -> None:
    with pytest.raises(SnapTradeValidationError) as error:
        check_event({"kind": "call"})
    assert error.value.message == "append needs an AuditEvent, got dict."


def test_an_event_is_stored_in_one_canonical_form() -> None:
    """Keys sorted, compact JSON, durations and times to the microsecond and millisecond they are kept at."""
    first = build_record(
        KEY, AuditEvent("call", "check", duration_ms=12.3456789, detail={"b": 1, "a": "x"}), 1, "0" * 64, 5.1234567
    )
    second = build_record(
        KEY, AuditEvent("call", "check", duration_ms=12.346, detail={"a": "x", "b": 1}), 1, "0" * 64, 5.123457
    )
    assert (first.detail, first.duration_ms, first.ts) == ('{"a":"x","b":1}', 12.346, 5.123457)
    assert first == second
    whole = check_event(AuditEvent("call", "check", duration_ms=5))
    assert isinstance(whole.duration_ms, float) and whole.duration_ms == 5.0


def test_a_pseudonymous_event_keeps_only_pseudonyms() -> None:
    record = build_record(
        KEY, AuditEvent("call", "check", user_id="u1", account_id="a1", pseudonymous=True), 1, "0" * 64, 1.0
    )
    assert (record.user_id, record.account_id) == (None, None)
    assert (record.user_ref, record.account_ref) == (KEY.pseudonym("u1"), KEY.pseudonym("a1"))
    clear = build_record(KEY, AuditEvent("call", "check", user_id="u1", account_id="a1"), 1, "0" * 64, 1.0)
    assert (clear.user_id, clear.account_id, clear.user_ref, clear.account_ref) == (
        "u1",
        "a1",
        record.user_ref,
        record.account_ref,
    )
    nobody = build_record(KEY, AuditEvent("call", "check"), 1, "0" * 64, 1.0)
    assert (nobody.user_ref, nobody.account_ref) == (None, None)


@pytest.mark.parametrize("secret", ["s" * 31, f"  {'s' * 31}  ", "", 12345678901234567890123456789012345])
def test_an_audit_key_needs_32_characters(secret: Any) -> None:
    with pytest.raises(SnapTradeConfigurationError) as error:
        AuditKey(secret)
    assert error.value.message == (
        "SNAPTRADE_AUDIT_KEY must be at least 32 characters; generate one with `aims-snaptrade generate-key`"
    )


def test_an_audit_key_of_32_characters_is_accepted_and_never_logged() -> None:
    secret = "k" * 31 + "!"
    key = AuditKey(secret)
    assert repr(key) == "AuditKey(<hidden>)"
    assert secret not in redact(f"loaded {secret} from the environment")
    assert key.pseudonym("u1").startswith("p-") and len(key.pseudonym("u1")) == 34
    assert len(key.mac(b"x")) == 64


@pytest.mark.parametrize("limit", [-1, True, 1.5, "3", 2**62 + 1])
def test_tail_refuses_a_limit_that_is_not_a_count(limit: Any, tmp_path: Path) -> None:
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    try:
        with pytest.raises(SnapTradeValidationError) as error:
            trail.tail(limit)
        assert error.value.message == f"limit must be a non-negative int, got {limit!r}."
    finally:
        trail.close()


def test_tail_returns_the_last_records_oldest_first(tmp_path: Path) -> None:
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    try:
        for i in range(25):
            trail.append(AuditEvent("call", f"op-{i}"))
        assert trail.tail(0) == []
        assert [r.action for r in trail.tail(3)] == ["op-22", "op-23", "op-24"]
        assert [r.seq for r in trail.tail()] == list(range(6, 26))  # 20 by default
        assert len(trail.tail(2**62)) == 25
    finally:
        trail.close()
