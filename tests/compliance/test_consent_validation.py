"""What the consent store refuses, and the message naming why (docs/compliance.md: a
``disclosure_version`` or ``source`` over 256 characters, an empty ``source`` on revocation, naive
datetimes, unknown scopes, bad ids, a maximum age that is not a whole number of days)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pytest

from aims_snaptrade._sql.database import SQLiteDatabase
from aims_snaptrade.compliance import SQLiteConsentStore
from aims_snaptrade.compliance.consent import ConsentRecord, SQLConsentStore
from aims_snaptrade.errors import SnapTradeValidationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class NoOffset(tzinfo):
    """A time zone naming no offset: a datetime in it names no instant."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


NAIVE_HINT = "must be timezone-aware (e.g. datetime.now(UTC)); a naive datetime names no instant."
REFUSED_GRANTS: list[tuple[dict[str, Any], str]] = [
    ({"scope": "write"}, "consent scope must be one of read, trade, got 'write'."),
    ({"user_id": ""}, "user_id must be a non-empty identifier."),
    ({"disclosure_version": "v" * 257}, "disclosure_version has 257 characters; at most 256 are accepted."),
    ({"source": "s" * 257}, "source has 257 characters; at most 256 are accepted."),
    ({"granted_at": "2026-01-01"}, "granted_at must be a datetime, got str."),
    ({"granted_at": datetime(2026, 1, 1)}, f"granted_at {NAIVE_HINT}"),
    ({"granted_at": datetime(2026, 1, 1, tzinfo=NoOffset())}, f"granted_at {NAIVE_HINT}"),
    ({"expires_at": datetime(2027, 1, 1)}, f"expires_at {NAIVE_HINT}"),
    ({"expires_at": datetime(2027, 1, 1, tzinfo=NoOffset())}, f"expires_at {NAIVE_HINT}"),
    ({"expires_at": 1.0}, "expires_at must be a datetime, got float."),
    ({"expires_at": T0}, "expires_at must be after granted_at."),
]


@pytest.mark.parametrize(("change", "message"), REFUSED_GRANTS, ids=[m for _, m in REFUSED_GRANTS])
def test_a_malformed_grant_is_refused_naming_why(change: dict[str, Any], message: str) -> None:
    store = SQLiteConsentStore(":memory:")
    try:
        fields = {"user_id": "u1", "scope": "read", "disclosure_version": "v1", "source": "web", "granted_at": T0}
        with pytest.raises(SnapTradeValidationError) as refused:
            store.grant(**{**fields, **change})
        assert refused.value.message == message
        assert store.records("u1") == []
    finally:
        store.close()


def test_the_limits_themselves_are_accepted() -> None:
    store = SQLiteConsentStore(":memory:")
    try:
        record = store.grant(
            "u" * 1024, "trade", "v" * 256, "s" * 256, granted_at=T0, expires_at=T0 + timedelta(microseconds=1)
        )
        assert record.expires_at - record.granted_at == timedelta(microseconds=1)
        assert store.records("u" * 1024) == [record]
    finally:
        store.close()


@pytest.mark.parametrize("days", [0, -1, True, 1.5, "30", None])
def test_the_maximum_age_is_a_whole_number_of_days(days: Any) -> None:
    with pytest.raises(SnapTradeValidationError) as refused:
        SQLiteConsentStore(":memory:", max_age_days=days)
    assert refused.value.message == f"max_age_days must be a whole number of days >= 1, got {days!r}."


def test_a_one_day_maximum_age_is_accepted() -> None:
    store = SQLiteConsentStore(":memory:", max_age_days=1)
    try:
        assert store.grant("u1", "read", "v1", "web", granted_at=T0).expires_at == T0 + timedelta(days=1)
    finally:
        store.close()


def test_a_store_whose_clock_names_no_instant_refuses_to_write() -> None:
    store = SQLiteConsentStore(":memory:", clock=lambda: datetime(2026, 1, 1))
    try:
        with pytest.raises(SnapTradeValidationError) as granting:
            store.grant("u1", "read", "v1", "web")
        assert granting.value.message == f"granted_at {NAIVE_HINT}"
        store.grant("u1", "read", "v1", "web", granted_at=T0)
        with pytest.raises(SnapTradeValidationError) as revoking:
            store.revoke("u1", source="support")
        assert revoking.value.message == "consent times must be timezone-aware (e.g. datetime.now(UTC))."
    finally:
        store.close()


def test_lookups_and_revocations_check_their_arguments() -> None:
    store = SQLiteConsentStore(":memory:")
    try:
        with pytest.raises(SnapTradeValidationError, match=r"^consent scope must be one of read, trade, got None"):
            store.latest("u1", None)  # type: ignore[arg-type]
        with pytest.raises(SnapTradeValidationError, match=r"^user_id must be a string, got int"):
            store.records(7)  # type: ignore[arg-type]
        with pytest.raises(SnapTradeValidationError, match=r"^user_id must be a non-empty identifier"):
            store.erase(" ")
        with pytest.raises(SnapTradeValidationError, match=r"^consent scope must be one of read, trade, got 'all'"):
            store.revoke("u1", "all", source="support")
        with pytest.raises(SnapTradeValidationError, match=r"^source must be a non-empty text"):
            store.revoke("u1", source="")
    finally:
        store.close()


def test_a_revocation_without_scope_or_source_revokes_every_scope_by_the_api() -> None:
    store = SQLiteConsentStore(":memory:")
    try:
        store.grant("u1", "read", "v1", "web")
        store.grant("u1", "trade", "v1", "web")
        store.grant("u2", "read", "v1", "web")
        assert store.revoke("u1") == 2
        assert [(r.scope, r.revoked_source) for r in store.records("u1")] == [("read", "api"), ("trade", "api")]
        assert all(r.revoked_at is not None and r.revoked_at.tzinfo is not None for r in store.records("u1"))
        assert store.revoke("u1") == 0  # nothing left in force
        assert store.has_consent("u2", "read")
        granted = store.records("u2")[0].granted_at
        assert granted.tzinfo is not None and abs(datetime.now(UTC) - granted) < timedelta(minutes=1)
    finally:
        store.close()


def test_a_grant_reads_back_field_for_field() -> None:
    clock_now = T0 + timedelta(days=3)
    store = SQLiteConsentStore(":memory:", clock=lambda: clock_now)
    try:
        given = store.grant(
            "u1", "trade", "2026-03", "web-onboarding", granted_at=T0, expires_at=T0 + timedelta(days=9)
        )
        expected = ConsentRecord("u1", "trade", T0, T0 + timedelta(days=9), "2026-03", "web-onboarding")
        assert given == expected
        assert store.latest("u1", "trade") == expected and store.records("u1") == [expected]
        store.revoke("u1", "trade", source="support-ticket-881")
        revoked = ConsentRecord(
            "u1", "trade", T0, T0 + timedelta(days=9), "2026-03", "web-onboarding", clock_now, "support-ticket-881"
        )
        assert store.latest("u1", "trade") == revoked and store.records("u1") == [revoked]
        assert store.latest("u1", "read") is None
    finally:
        store.close()


def test_the_default_maximum_age_is_a_year() -> None:
    """SNAPTRADE_CONSENT_MAX_AGE_DAYS defaults to 365, whichever way the store is built."""
    for store in (SQLiteConsentStore(":memory:"), SQLConsentStore(SQLiteDatabase(":memory:", what="consent store"))):
        try:
            assert store.grant("u1", "read", "v1", "web", granted_at=T0).expires_at == T0 + timedelta(days=365)
            assert repr(store).endswith("max_age_days=365)")
        finally:
            store.close()
