"""Acceptance: malformed input to the audit trail, the consent store and id-taking entry points is a
typed error before anything is written or sent; every valid input is stored exactly as signed.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from compliance_helpers import POSTGRES_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.compliance import AuditEvent, AuditKey, PostgresAuditTrail, SQLiteAuditTrail, SQLiteConsentStore
from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.testing import SnapTradeEmulator

KEY = AuditKey("input-test-audit-key-0123456789abcdef")
TRIED = {"valid": 0, "refused": 0}

_PRINTABLE = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40)
_TEXT = _PRINTABLE.filter(lambda s: s.strip())
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(-1e15, 1e15, allow_nan=False, allow_infinity=False),
    _PRINTABLE,
)


@st.composite
def events(draw):
    return AuditEvent(
        kind=draw(_TEXT),
        action=draw(_TEXT),
        user_id=draw(st.none() | _TEXT),
        account_id=draw(st.none() | _TEXT),
        outcome=draw(_TEXT),
        status=draw(st.none() | st.integers(0, 999)),
        request_id=draw(st.none() | _TEXT),
        attempts=draw(st.integers(0, 10_000)),
        duration_ms=draw(st.none() | st.integers(0, 10**9) | st.floats(0, 1e12, allow_nan=False)),
        detail=draw(st.dictionaries(_TEXT.filter(lambda k: len(k) <= 64), _SCALAR, max_size=6)),
        durable=draw(st.booleans()),
        pseudonymous=draw(st.booleans()),
    )


def _round_trip(trail, batch) -> None:
    written = [trail.append(event) for event in batch]
    assert trail.verify().ok  # no valid input ever verifies as tampered
    assert trail.tail(len(written)) == written  # stored exactly as signed
    TRIED["valid"] += len(batch)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=5))
def test_every_valid_event_is_stored_as_signed_sqlite(batch):
    trail = SQLiteAuditTrail(":memory:", KEY)
    try:
        _round_trip(trail, batch)
    finally:
        trail.close()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=5))
def test_every_valid_event_is_stored_as_signed_postgres(batch):
    schema = f"aims_input_{uuid.uuid4().hex[:12]}"
    trail = PostgresAuditTrail(POSTGRES_URL, KEY, schema=schema)
    try:
        _round_trip(trail, batch)
    finally:
        trail.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


BAD_EVENTS = {
    "numeric user id": {"user_id": 42},
    "NUL in user id": {"user_id": "a\x00b"},
    "LF in user id": {"user_id": "carol\nwebhook.USER_DELETED user=mallory"},
    "CR in account id": {"account_id": "acc\r1"},
    "ESC in request id": {"request_id": "\x1b[31mred"},
    "100,000-character user id": {"user_id": "u" * 100_000},
    "status as text": {"status": "200"},
    "status as bool": {"status": True},
    "status out of range": {"status": 10_000},
    "NaN duration": {"duration_ms": math.nan},
    "infinite duration": {"duration_ms": math.inf},
    "negative duration": {"duration_ms": -1.0},
    "duration as text": {"duration_ms": "5"},
    "attempts as float": {"attempts": 1.0},
    "negative attempts": {"attempts": -1},
    "unserialisable detail": {"detail": {"x": object()}},
    "nested detail": {"detail": {"x": {"y": 1}}},
    "NaN in detail": {"detail": {"x": math.nan}},
    "huge integer in detail": {"detail": {"x": 2**64}},
    "non-text detail key": {"detail": {1: "x"}},
    "too many detail entries": {"detail": {f"k{i}": i for i in range(33)}},
    "empty action": {"action": " "},
    "control character in action": {"action": "list\x07"},
    "durable as text": {"durable": "yes"},
}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_malformed_events_are_refused_before_anything_is_written(case, tmp_path: Path):
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    try:
        before = trail.count()
        fields = {"kind": "call", "action": "list_all_user_accounts", **BAD_EVENTS[case]}
        with pytest.raises(SnapTradeValidationError) as refused:
            trail.append(AuditEvent(**fields))
        assert refused.value.message  # says what was wrong
        assert trail.count() == before and trail.verify().ok
        TRIED["refused"] += 1
    finally:
        trail.close()


def test_an_audit_event_of_another_type_is_refused(tmp_path: Path):
    trail = SQLiteAuditTrail(tmp_path / "audit.db", KEY)
    try:
        with pytest.raises(SnapTradeValidationError, match="AuditEvent"):
            trail.append({"kind": "call"})  # type: ignore[arg-type]
        TRIED["refused"] += 1
    finally:
        trail.close()


NAIVE = datetime(2026, 1, 1)
BAD_GRANTS = {
    "1 MB disclosure_version": {"disclosure_version": "v" * 1_000_000},
    "1 MB source": {"source": "s" * 1_000_000},
    "LF in source": {"source": "web\nforged line"},
    "numeric user id": {"user_id": 7},
    "ESC in user id": {"user_id": "\x1b]0;title"},
    "naive expires_at": {"expires_at": NAIVE},
    "naive granted_at": {"granted_at": NAIVE},
    "expires_at as text": {"expires_at": "2027-01-01"},
    "unknown scope": {"scope": "write"},
}


@pytest.mark.parametrize("case", sorted(BAD_GRANTS))
def test_malformed_grants_are_refused(case, tmp_path: Path):
    store = SQLiteConsentStore(tmp_path / "consent.db")
    try:
        fields = {"user_id": "u1", "scope": "read", "disclosure_version": "v1", "source": "web", **BAD_GRANTS[case]}
        with pytest.raises(SnapTradeValidationError):
            store.grant(**fields)
        assert store.records("u1") == []
        TRIED["refused"] += 1
    finally:
        store.close()


@pytest.mark.parametrize("source", ["", "   ", "a\nb", "x" * 300, None])
def test_a_revocation_needs_a_source(source, tmp_path: Path):
    store = SQLiteConsentStore(tmp_path / "consent.db")
    try:
        store.grant("u1", "read", "v1", "web")
        with pytest.raises(SnapTradeValidationError):
            store.revoke("u1", source=source)  # type: ignore[arg-type]
        assert store.decide("u1", "read").allowed
        TRIED["refused"] += 1
    finally:
        store.close()


def test_a_grant_reads_back_exactly_as_returned(tmp_path: Path):
    store = SQLiteConsentStore(tmp_path / "consent.db")
    try:
        odd = datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=UTC) + timedelta(microseconds=1)
        record = store.grant("u1", "read", "v1", "web", granted_at=odd, expires_at=odd + timedelta(days=30))
        assert store.records("u1") == [record]
    finally:
        store.close()


@pytest.mark.parametrize("user_id", ["carol\r\nINFO forged", "esc\x1b[2J", "nul\x00", "x" * 1025, 12])
def test_every_id_taking_entry_point_refuses_bad_ids_before_sending(user_id, tmp_path: Path):
    with SnapTradeEmulator() as emu:
        settings_ = {
            "client_id": emu.client_id,
            "consumer_key": emu.consumer_key,
            "environment": "sandbox",
            "base_url": emu.base_url,
            "secret_store_url": "memory://",
            "consent_store_url": f"sqlite:///{tmp_path}/c.db",
            "audit_key": "input-test-audit-key-0123456789abcdef",
            "audit_store_url": f"sqlite:///{tmp_path}/a.db",
            "retry": "none",
        }
        with SafeSnapTradeClient(**settings_) as client:
            calls = [
                lambda: client.register_user(user_id),
                lambda: client.list_accounts(user_id),
                lambda: client.grant_consent(user_id, "read", disclosure_version="v1", source="web"),
                lambda: client.revoke_consent(user_id, source="web"),
                lambda: client.export_user(user_id),
                lambda: client.erase_user(user_id, confirm=True),
                lambda: client.grant_consent("ok", "read", disclosure_version="v1", source="web", expires_at=NAIVE),
            ]
            for call in calls:
                with pytest.raises(SnapTradeValidationError):
                    call()
                TRIED["refused"] += 1
            assert emu.journal.count() == 0  # nothing was sent
            assert client.audit_trail.verify().ok


def test_print_inputs_tried():
    print(f"inputs tried: {TRIED['valid']} valid events stored as signed, {TRIED['refused']} malformed refused")
