"""Conformance suites for consent stores and audit trails, built-in or custom.

Subclass under a ``Test*`` name and implement the factory; pytest collects every inherited test::

    from aims_snaptrade.testing.compliance_conformance import AuditTrailConformance, ConsentStoreConformance

    class TestMyConsentStore(ConsentStoreConformance):
        def make_store(self, tmp_path):
            return MyConsentStore(url=f"...{tmp_path.name}", max_age_days=365)

    class TestMyAuditSink(AuditTrailConformance):
        def make_trail(self, tmp_path):
            return MyAuditSink(url=f"...{tmp_path.name}", key=AuditKey("..." * 8))

``make_store(tmp_path)`` / ``make_trail(tmp_path)`` are called once per test and again with the
same ``tmp_path`` where a test needs a second replica over the same storage (persistent stores
only). Consent stores are built with a 365-day maximum age (the suite makes old grants with
``granted_at`` rather than a clock). Only ``pytest`` is needed.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aims_snaptrade.compliance.audit import AuditEvent, AuditTrail
from aims_snaptrade.compliance.consent import ConsentStore
from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.testing.forget_conformance import ForgetRule, assert_forgotten

__all__ = ["AuditTrailConformance", "ConsentStoreConformance"]


class ConsentStoreConformance(ForgetRule):
    """Behaviour every consent store must have. Implement :meth:`make_store`."""

    def make_store(self, tmp_path: Path) -> ConsentStore:
        """Return a consent store (365-day maximum age) over the storage named by ``tmp_path``."""
        raise NotImplementedError("implement make_store(tmp_path) in your conformance subclass")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ConsentStore]:
        """A fresh store, closed after the test."""
        store = self.make_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    def test_is_a_consent_store_with_traits(self, store: ConsentStore) -> None:
        """The protocol is satisfied and ``kind``/``persistent`` are declared for guardrails."""
        assert isinstance(store, ConsentStore)
        assert isinstance(getattr(store, "kind", None), str)
        assert isinstance(getattr(store, "persistent", None), bool)

    def test_missing_consent_is_refused(self, store: ConsentStore) -> None:
        """No grant: not allowed, reason ``missing``."""
        decision = store.decide("u-missing", "read")
        assert (decision.allowed, decision.reason, decision.expires_at) == (False, "missing", None)
        assert store.has_consent("u-missing", "read") is False

    def test_grant_allows_until_the_maximum_age(self, store: ConsentStore) -> None:
        """A grant is current and expires at most 365 days after it was given."""
        record = store.grant("u1", "read", "v1", "suite")
        assert record.expires_at - record.granted_at <= timedelta(days=365)
        decision = store.decide("u1", "read")
        assert decision.allowed
        assert decision.expires_at == record.expires_at

    def test_an_old_grant_has_expired_and_says_when(self, store: ConsentStore) -> None:
        """A grant older than the maximum age is refused as ``expired`` with its expiry."""
        granted = datetime.now(UTC) - timedelta(days=400)
        record = store.grant("u2", "read", "v1", "suite", granted_at=granted)
        decision = store.decide("u2", "read")
        assert (decision.allowed, decision.reason) == (False, "expired")
        assert decision.expires_at == record.expires_at
        assert abs(decision.expires_at - (granted + timedelta(days=365))) < timedelta(seconds=1)

    def test_an_earlier_expiry_is_honoured(self, store: ConsentStore) -> None:
        """``expires_at`` shortens a consent."""
        now = datetime.now(UTC)
        store.grant("u3", "read", "v1", "suite", granted_at=now - timedelta(days=2), expires_at=now - timedelta(days=1))
        assert store.decide("u3", "read").reason == "expired"

    def test_scopes_are_independent_and_revocation_is_per_scope(self, store: ConsentStore) -> None:
        """``read`` and ``trade`` are separate; revoking one leaves the other."""
        store.grant("u4", "read", "v1", "suite")
        assert not store.has_consent("u4", "trade")
        store.grant("u4", "trade", "v1", "suite")
        assert store.revoke("u4", "read", "suite") == 1
        assert store.decide("u4", "read").reason == "revoked"
        assert store.decide("u4", "read").revoked_at is not None
        assert store.has_consent("u4", "trade")
        assert store.revoke("u4", None, "suite") == 1
        assert not store.has_consent("u4", "trade")

    def test_a_new_grant_after_revocation_counts(self, store: ConsentStore) -> None:
        """The latest grant decides."""
        store.grant("u5", "read", "v1", "suite")
        store.revoke("u5", "read", "suite")
        store.grant("u5", "read", "v2", "suite")
        assert store.has_consent("u5", "read")
        assert [r.disclosure_version for r in store.records("u5")] == ["v1", "v2"]

    def test_erase_removes_every_record(self, store: ConsentStore) -> None:
        """``erase`` deletes the user's whole history and only theirs."""
        store.grant("u6", "read", "v1", "suite")
        store.grant("u6", "trade", "v1", "suite")
        store.grant("u7", "read", "v1", "suite")
        assert store.erase("u6") == 2
        assert store.records("u6") == []
        assert store.has_consent("u7", "read")

    def test_bad_input_is_a_validation_error(self, store: ConsentStore) -> None:
        """Unknown scopes, empty ids and naive times are refused with a typed error."""
        with pytest.raises(SnapTradeValidationError):
            store.grant("u8", "write", "v1", "suite")
        with pytest.raises(SnapTradeValidationError):
            store.grant("", "read", "v1", "suite")
        with pytest.raises(SnapTradeValidationError):
            store.grant("u8", "read", "", "suite")
        with pytest.raises(SnapTradeValidationError):
            store.grant("u8", "read", "v1", "suite", granted_at=datetime(2026, 1, 1))  # a naive time
        with pytest.raises(SnapTradeValidationError):
            store.decide("u8", "everything")

    def test_a_revocation_is_seen_by_another_replica_at_once(self, store: ConsentStore, tmp_path: Path) -> None:
        """Nothing is cached: a second store over the same storage sees a revocation immediately."""
        if not getattr(store, "persistent", False):
            pytest.skip("the store is not shared between instances")
        other = self.make_store(tmp_path)
        try:
            store.grant("u9", "read", "v1", "suite")
            assert other.has_consent("u9", "read")
            other.revoke("u9", "read", "replica-2")
            assert store.decide("u9", "read").reason == "revoked"
        finally:
            other.close()

    def test_concurrent_grants_from_threads(self, store: ConsentStore) -> None:
        """Every method is thread-safe."""
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(10):
                    store.grant(f"t{n}-{i}", "read", "v1", "suite")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert all(store.has_consent(f"t{n}-{i}", "read") for n in range(6) for i in range(10))

    def test_forgetting_a_user_leaves_no_byte_of_the_id(self, store: ConsentStore, tmp_path: Path) -> None:
        """``erase`` removes every grant of the user from the storage (WAL included); others stay."""
        gone, kept = "forget-consent-91c2e7", "keep-consent-4b7d10"
        for user in (gone, kept):
            store.grant(user, "read", "v1", "suite")
            store.grant(user, "trade", "v1", "suite")
            store.revoke(user, "trade", source="suite")
        assert store.erase(gone) == 2
        assert store.records(gone) == []
        assert len(store.records(kept)) == 2
        assert_forgotten(self._raw_or_skip(store, tmp_path), (gone,), kept)


class AuditTrailConformance(ForgetRule):
    """Behaviour every audit trail must have. Implement :meth:`make_trail`."""

    def make_trail(self, tmp_path: Path) -> AuditTrail:
        """Return an audit trail over the storage named by ``tmp_path``."""
        raise NotImplementedError("implement make_trail(tmp_path) in your conformance subclass")

    @pytest.fixture
    def trail(self, tmp_path: Path) -> Iterator[AuditTrail]:
        """A fresh trail, closed after the test."""
        trail = self.make_trail(tmp_path)
        try:
            yield trail
        finally:
            trail.close()

    def test_is_an_audit_trail(self, trail: AuditTrail) -> None:
        """The protocol is satisfied and an empty trail verifies."""
        assert isinstance(trail, AuditTrail)
        assert trail.verify().ok

    def test_appends_form_a_verifying_chain(self, trail: AuditTrail) -> None:
        """Sequence numbers follow each other and each record names its predecessor's MAC."""
        records = [trail.append(AuditEvent("call", "check", status=200)) for _ in range(5)]
        assert [r.seq for r in records] == [1, 2, 3, 4, 5]
        assert all(b.prev_mac == a.mac for a, b in itertools.pairwise(records))
        report = trail.verify()
        assert (report.ok, report.checked, report.head_seq) == (True, 5, 5)
        assert [r.seq for r in trail.tail(2)] == [4, 5]

    def test_threads_append_one_chain(self, trail: AuditTrail) -> None:
        """Concurrent appends never fork the chain."""

        def work() -> None:
            for _ in range(15):
                trail.append(AuditEvent("call", "check"))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report = trail.verify()
        assert (report.ok, report.checked) == (True, 60)

    def test_records_are_found_by_user_and_pseudonymised(self, trail: AuditTrail) -> None:
        """Pseudonymisation blanks clear ids, keeps the records findable and the chain verifying."""
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id="alice", account_id="a-1"))
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id="bob"))
        assert [r.user_id for r in trail.records_for_user("alice")] == ["alice"]
        assert trail.pseudonymise("alice") >= 1
        kept = trail.records_for_user("alice")
        assert [(r.user_id, r.account_id) for r in kept] == [(None, None)]
        assert kept[0].user_ref == trail.pseudonym("alice")
        assert trail.records_for_user("bob")[0].user_id == "bob"
        assert trail.verify().ok

    def test_purge_keeps_the_rest_verifiable(self, trail: AuditTrail) -> None:
        """Purging everything so far moves the signed anchor; the chain still verifies."""
        for _ in range(3):
            trail.append(AuditEvent("call", "check"))
        report = trail.purge(datetime.now(UTC) + timedelta(seconds=1))
        assert (report.removed, report.anchor_seq) == (3, 3)
        trail.append(AuditEvent("call", "check"))
        verified = trail.verify()
        assert verified.ok
        assert verified.anchor_seq == 3

    def test_forgetting_a_user_leaves_no_byte_of_the_id(self, trail: AuditTrail, tmp_path: Path) -> None:
        """``pseudonymise`` leaves no byte of the user's id or account ids in the storage, and a
        record appended afterwards about the user is pseudonymous too; the chain verifies."""
        gone, account, kept = "forget-audit-3e9f11", "forget-account-77a0c2", "keep-audit-0d55e8"
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id=gone, account_id=account))
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id=kept, account_id="keep-account-1"))
        trail.pseudonymise(gone)
        after = trail.append(AuditEvent("webhook", "webhook.USER_DELETED", user_id=gone))
        assert after.user_id is None
        assert after.user_ref == trail.pseudonym(gone)
        assert trail.verify().ok
        assert_forgotten(self._raw_or_skip(trail, tmp_path), (gone, account), kept)

    def test_a_checkpoint_holds_until_contradicted(self, trail: AuditTrail) -> None:
        """``checkpoint()`` signs the head; ``verify([checkpoint])`` passes while the chain grows past
        it and refuses a checkpoint whose signature does not match (``problem == "checkpoint"``)."""
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id="u-cp"))
        saved = trail.checkpoint()
        trail.append(AuditEvent("call", "list_all_user_accounts", user_id="u-cp"))
        assert trail.verify([saved]).ok
        forged = type(saved)(saved.chain_id, saved.seq, saved.mac, saved.time + 1, saved.signature)
        report = trail.verify([forged])
        assert not report.ok
        assert report.problem == "checkpoint"
