"""The consent expiry docs/compliance.md promises, as properties of the SQL consent store.

- A consent expires at the earlier of the grant's ``expires_at`` and ``granted_at`` plus
  ``SNAPTRADE_CONSENT_MAX_AGE_DAYS``; it is refused from that very instant on, as ``expired`` and
  naming the expiry.
- The maximum age caps the ``expires_at`` recorded at grant time (``ConsentRecord.expires_at``:
  "at most granted_at + the maximum age"), so a store opened later with a longer maximum age does
  not lengthen it; and it is applied again when deciding, so shortening the setting shortens
  consents already on record.
- A revocation is refused at once as ``revoked``, naming when; revoking counts the grants in force.
- The sweep deletes exactly the grants whose end (revocation, or expiry by the earlier of
  ``expires_at`` and the maximum age) is older than the cut-off; grants in force stay.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aims_snaptrade._sql.database import SQLiteDatabase
from aims_snaptrade.compliance import SQLiteConsentStore
from aims_snaptrade.compliance.consent import ConsentDecision, SQLConsentStore, as_consent_lookup
from aims_snaptrade.errors import SnapTradeValidationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86_400


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    # One file for every example (each example uses its own user ids): a new database per
    # example would cost more than the property.
    with tempfile.TemporaryDirectory() as where:
        yield Path(where)


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


# Whole seconds from T0: timestamps stay exact as the stores' floats, so equality is exact.
_AGE = st.integers(1, 800)
_ASKED = st.none() | st.integers(-2 * DAY, 900 * DAY)
_NEAR = st.sampled_from([0, -1, 1]) | st.integers(-400 * DAY, 400 * DAY)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recorded_age=_AGE, deciding_age=_AGE, asked=_ASKED, offset=_NEAR)
@example(recorded_age=365, deciding_age=365, asked=None, offset=0)  # the exact expiry instant
@example(recorded_age=365, deciding_age=30, asked=None, offset=0)  # shortened since the grant
@example(recorded_age=365, deciding_age=730, asked=None, offset=1)  # lengthened since the grant
@example(recorded_age=365, deciding_age=365, asked=400 * DAY, offset=0)  # asked beyond the maximum
def test_a_consent_expires_at_the_earlier_of_its_expiry_and_the_maximum_age(
    folder: Path, recorded_age: int, deciding_age: int, asked: int | None, offset: int
) -> None:
    clock = Clock()
    db = folder / "consents.db"
    recorder = SQLiteConsentStore(db, max_age_days=recorded_age, clock=clock)
    decider = SQLiteConsentStore(db, max_age_days=deciding_age, clock=clock)  # the setting changed since
    user = f"u-{uuid.uuid4().hex}"
    try:
        asked_at = None if asked is None else _at(asked)
        if asked is not None and asked <= 0:
            with pytest.raises(SnapTradeValidationError):
                recorder.grant(user, "read", "v1", "test", granted_at=T0, expires_at=asked_at)
            assert decider.decide(user, "read").reason == "missing"
            return
        record = recorder.grant(user, "read", "v1", "test", granted_at=T0, expires_at=asked_at)
        recorded = min(_at(recorded_age * DAY), asked_at or _at(recorded_age * DAY))
        assert record.expires_at == recorded  # the maximum age caps what is recorded
        assert recorder.latest(user, "read") == record
        expiry = min(recorded, _at(deciding_age * DAY))  # and is applied again when deciding
        clock.now = expiry + timedelta(seconds=offset)
        decision = decider.decide(user, "read")
        if clock.now < expiry:
            assert decision == ConsentDecision(True, "read", "granted", expiry)
            assert decider.has_consent(user, "read")
        else:  # refused from the expiry instant on
            assert decision == ConsentDecision(False, "read", "expired", expiry)
            assert not decider.has_consent(user, "read")
        assert decider.decide(user, "trade") == ConsentDecision(False, "trade", "missing")
    finally:
        recorder.close()
        decider.close()


@settings(max_examples=60, deadline=None)
@given(age=_AGE, asked=st.none() | st.integers(1, 900 * DAY), revoke_at=st.integers(0, 900 * DAY))
@example(age=365, asked=None, revoke_at=365 * DAY)  # revoking at the expiry instant: nothing in force
@example(age=365, asked=None, revoke_at=365 * DAY - 1)
def test_revocation_takes_effect_at_once_and_counts_grants_in_force(
    age: int, asked: int | None, revoke_at: int
) -> None:
    clock = Clock()
    store = SQLiteConsentStore(":memory:", max_age_days=age, clock=clock)
    user = f"u-{uuid.uuid4().hex}"
    try:
        asked_at = None if asked is None else _at(asked)
        record = store.grant(user, "read", "v1", "test", granted_at=T0, expires_at=asked_at)
        store.grant(user, "trade", "v1", "test", granted_at=T0)
        clock.now = _at(revoke_at)
        in_force = clock.now < record.expires_at
        assert store.revoke(user, "read", source="support") == int(in_force)
        decision = store.decide(user, "read")
        if in_force:
            assert decision == ConsentDecision(False, "read", "revoked", record.expires_at, clock.now)
            assert store.records(user)[0].revoked_at == clock.now
            assert store.records(user)[0].revoked_source == "support"
        else:
            assert decision == ConsentDecision(False, "read", "expired", record.expires_at)
            assert store.records(user)[0].revoked_at is None
        assert store.decide(user, "trade").allowed == (clock.now < _at(age * DAY))  # only "read" was revoked
    finally:
        store.close()


@st.composite
def grants(draw: st.DrawFn) -> tuple[int, int | None, int | None]:
    """(granted_at, asked expiry, revocation time) in seconds from T0; the expiry after the grant."""
    granted = draw(st.integers(-900 * DAY, 0))
    asked = draw(st.none() | st.integers(granted + 1, granted + 900 * DAY))
    revoked = draw(st.none() | st.integers(granted, granted + 900 * DAY))
    return granted, asked, revoked


@settings(max_examples=60, deadline=None)
@given(
    age=_AGE,
    sweeping_age=_AGE,
    history=st.lists(grants(), min_size=1, max_size=6),
    before=st.integers(-900 * DAY, 900 * DAY),
)
@example(age=30, sweeping_age=30, history=[(0, None, None)], before=30 * DAY)  # ends exactly at the cut-off: kept
@example(age=30, sweeping_age=30, history=[(0, None, None)], before=30 * DAY + 1)
@example(age=30, sweeping_age=30, history=[(0, 10 * DAY, None)], before=10 * DAY + 1)
@example(age=30, sweeping_age=30, history=[(0, None, 5 * DAY)], before=5 * DAY + 1)
@example(age=30, sweeping_age=30, history=[(0, None, 5 * DAY)], before=5 * DAY)
@example(age=30, sweeping_age=30, history=[(0, None, None), (-40 * DAY, None, None)], before=0)
@example(age=365, sweeping_age=30, history=[(0, None, None)], before=30 * DAY + 1)  # the setting shortened since
def test_the_sweep_removes_exactly_the_grants_that_lapsed_before_the_cut_off(
    age: int, sweeping_age: int, history: list[tuple[int, int | None, int | None]], before: int
) -> None:
    clock = Clock()
    db = SQLiteDatabase(":memory:", what="consent store")  # the sweep counts every user's rows: one per example
    store = SQLConsentStore(db, max_age_days=age, clock=clock)
    sweeper = SQLConsentStore(db, max_age_days=sweeping_age, clock=clock)  # the setting as the sweep runs
    try:
        run = uuid.uuid4().hex
        ends: dict[str, int] = {}
        for i, (granted, asked, revoked) in enumerate(history):
            user = f"u-{run}-{i}"
            recorded = min(asked if asked is not None else granted + age * DAY, granted + age * DAY)
            asked_at = None if asked is None else _at(asked)
            store.grant(user, "read", "v1", "test", granted_at=_at(granted), expires_at=asked_at)
            end = min(recorded, granted + sweeping_age * DAY)
            if revoked is not None:
                clock.now = _at(revoked)
                assert store.revoke(user, "read", source="test") == int(revoked < recorded)
                if revoked < recorded:
                    end = min(end, revoked)
            ends[user] = end
        lapsed = {user for user, end in ends.items() if end < before}
        assert sweeper.sweep(_at(before)) == len(lapsed)
        assert {user for user in ends if store.records(user)} == set(ends) - lapsed
    finally:
        db.close()


def test_the_sweep_refuses_a_naive_cut_off(tmp_path: Path) -> None:
    store = SQLiteConsentStore(tmp_path / "c.db")
    try:
        with pytest.raises(SnapTradeValidationError) as refused:
            store.sweep(datetime(2026, 1, 1))  # a naive time names no instant
        assert refused.value.message.startswith("before must be timezone-aware")
    finally:
        store.close()


def test_a_plain_checker_is_asked_through_has_consent() -> None:
    """Any object with ``has_consent`` works as ``consent=``, without the expiry in its refusals."""

    class Checker:
        def __init__(self) -> None:
            self.asked: list[tuple[str, str]] = []

        def has_consent(self, user_id: str, scope: str) -> bool:
            self.asked.append((user_id, scope))
            return user_id == "yes"

    checker = Checker()
    lookup = as_consent_lookup(checker)
    assert lookup.decide("yes", "trade") == ConsentDecision(True, "trade", "granted")
    assert lookup.decide("no", "read") == ConsentDecision(False, "read", "missing")
    assert checker.asked == [("yes", "trade"), ("no", "read")]
    store = SQLiteConsentStore(":memory:")
    try:
        assert as_consent_lookup(store) is store  # a store explains its decisions itself
    finally:
        store.close()
