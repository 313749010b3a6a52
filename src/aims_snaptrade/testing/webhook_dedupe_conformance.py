"""A conformance suite any :class:`~aims_snaptrade.webhooks.WebhookDedupeStore` can run against itself.

Subclass :class:`WebhookDedupeStoreConformance` under a ``Test*`` name and implement
:meth:`~WebhookDedupeStoreConformance.make_store`; pytest collects every inherited test::

    from aims_snaptrade.testing.webhook_dedupe_conformance import WebhookDedupeStoreConformance

    class TestDynamoClaims(WebhookDedupeStoreConformance):
        def make_store(self, tmp_path):
            return DynamoWebhookDedupeStore(table=f"claims-{tmp_path.name}")

``make_store(tmp_path)`` is called once per test, and again with the same ``tmp_path`` to open a
second handle on the same storage (a second replica): storage keyed on ``tmp_path`` gives each
test a clean store. Stores whose second handle cannot see the first's claims (in-process memory)
set ``shares_between_handles = False``.

Lease and retention expiry are tested with sub-second durations and margins of several times
that, so a loaded machine does not make the suite flaky.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aims_snaptrade.webhooks.dedupe.protocol import WebhookDedupeStore

__all__ = ["WebhookDedupeStoreConformance"]

_LONG = 60.0
_SHORT = 0.2
_PAST_SHORT = 0.7


def _id() -> str:
    return f"conformance-{uuid.uuid4()}"


class WebhookDedupeStoreConformance:
    """Behaviour every webhook dedupe store must have."""

    #: Threads racing for one claim in the concurrency test.
    concurrency_threads: int = 12
    #: Whether a second handle from ``make_store(tmp_path)`` sees the first handle's claims.
    shares_between_handles: bool = True

    def make_store(self, tmp_path: Path) -> WebhookDedupeStore:
        """Return a store over the storage identified by ``tmp_path`` (fresh for every test)."""
        raise NotImplementedError("implement make_store(tmp_path) in your conformance subclass")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[WebhookDedupeStore]:
        """A fresh store, closed after the test."""
        store = self.make_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    def test_is_a_dedupe_store_with_traits(self, store: WebhookDedupeStore) -> None:
        """The runtime-checkable protocol holds; ``kind`` and ``shared`` are declared."""
        assert isinstance(store, WebhookDedupeStore)
        assert isinstance(store.kind, str)
        assert store.kind
        assert isinstance(store.shared, bool)

    def test_first_claim_wins_and_others_see_it_in_progress(self, store: WebhookDedupeStore) -> None:
        """A claimed id is ``in_progress`` for every other token until completed or released."""
        webhook_id = _id()
        assert store.claim(webhook_id, "a", _LONG) == "claimed"
        assert store.claim(webhook_id, "b", _LONG) == "in_progress"
        assert store.claim(webhook_id, "a", _LONG) == "in_progress"  # even for the holder: no re-entry
        assert store.claim(_id(), "b", _LONG) == "claimed"  # ids are independent

    def test_completed_claim_is_processed(self, store: WebhookDedupeStore) -> None:
        """After ``complete`` every claim answers ``processed``."""
        webhook_id = _id()
        store.claim(webhook_id, "a", _LONG)
        assert store.complete(webhook_id, "a", _LONG) is True
        assert store.claim(webhook_id, "b", _LONG) == "processed"
        assert store.complete(webhook_id, "a", _LONG) is False  # already done
        assert store.release(webhook_id, "a") is False  # a processed id cannot be released

    def test_released_claim_can_be_claimed_again(self, store: WebhookDedupeStore) -> None:
        """``release`` (the handler failed) lets the redelivery be processed."""
        webhook_id = _id()
        store.claim(webhook_id, "a", _LONG)
        assert store.release(webhook_id, "a") is True
        assert store.claim(webhook_id, "b", _LONG) == "claimed"

    def test_only_the_holder_completes_or_releases(self, store: WebhookDedupeStore) -> None:
        """Another token changes nothing."""
        webhook_id = _id()
        store.claim(webhook_id, "a", _LONG)
        assert store.complete(webhook_id, "intruder", _LONG) is False
        assert store.release(webhook_id, "intruder") is False
        assert store.claim(webhook_id, "b", _LONG) == "in_progress"
        assert store.complete(_id(), "a", _LONG) is False  # never claimed

    def test_an_expired_lease_is_taken_over(self, store: WebhookDedupeStore) -> None:
        """A holder that died stops blocking after its lease; it cannot complete once taken over."""
        webhook_id = _id()
        assert store.claim(webhook_id, "a", _SHORT) == "claimed"
        time.sleep(_PAST_SHORT)
        assert store.claim(webhook_id, "b", _LONG) == "claimed"
        assert store.complete(webhook_id, "a", _LONG) is False
        assert store.release(webhook_id, "a") is False
        assert store.complete(webhook_id, "b", _LONG) is True

    def test_processed_ids_are_forgotten_after_retention(self, store: WebhookDedupeStore) -> None:
        """Retention bounds storage: after it a redelivery is processed again."""
        webhook_id = _id()
        store.claim(webhook_id, "a", _LONG)
        assert store.complete(webhook_id, "a", _SHORT) is True
        time.sleep(_PAST_SHORT)
        assert store.claim(webhook_id, "b", _LONG) == "claimed"

    def test_processed_ids_are_kept_for_the_retention_not_the_lease(self, store: WebhookDedupeStore) -> None:
        """``complete`` replaces the lease's expiry by the retention: a short lease does not forget a processed id."""
        webhook_id = _id()
        assert store.claim(webhook_id, "a", _SHORT) == "claimed"
        assert store.complete(webhook_id, "a", _LONG) is True
        time.sleep(_PAST_SHORT)
        assert store.claim(webhook_id, "b", _SHORT) == "processed"

    def test_concurrent_claims_have_exactly_one_winner(self, store: WebhookDedupeStore) -> None:
        """Threads racing for one id: one ``claimed``, the rest ``in_progress``."""
        webhook_id = _id()
        barrier = threading.Barrier(self.concurrency_threads)
        results: list[str] = []
        lock = threading.Lock()

        def race(n: int) -> None:
            barrier.wait()
            outcome = store.claim(webhook_id, f"t{n}", _LONG)
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=race, args=(n,)) for n in range(self.concurrency_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results) == ["claimed"] + ["in_progress"] * (self.concurrency_threads - 1)

    def test_a_second_handle_sees_the_claims(self, store: WebhookDedupeStore, tmp_path: Path) -> None:
        """Two replicas on the same storage share claims (skipped for per-process stores)."""
        if not self.shares_between_handles:
            pytest.skip("this store is per process")
        other = self.make_store(tmp_path)
        try:
            webhook_id = _id()
            assert store.claim(webhook_id, "a", _LONG) == "claimed"
            assert other.claim(webhook_id, "b", _LONG) == "in_progress"
            assert store.complete(webhook_id, "a", _LONG) is True
            assert other.claim(webhook_id, "b", _LONG) == "processed"
        finally:
            other.close()

    def test_odd_ids_are_kept_apart(self, store: WebhookDedupeStore) -> None:
        """Ids with non-ASCII text, quotes, separators and great length are stored as given."""
        base = _id()
        ids = [base + suffix for suffix in ("", ":x", "'; --", "é😀", "%", "*", "x" * 500)]
        for webhook_id in ids:
            assert store.claim(webhook_id, "a", _LONG) == "claimed"
        for webhook_id in ids:
            assert store.claim(webhook_id, "b", _LONG) == "in_progress"
