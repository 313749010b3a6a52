"""A conformance suite any :class:`~aims_snaptrade.trading.OrderIntentStore` can run against itself.

Subclass :class:`OrderIntentStoreConformance` under a ``Test*`` name and implement
:meth:`~OrderIntentStoreConformance.make_store`; pytest collects every inherited test::

    from aims_snaptrade.testing.order_intent_store_conformance import OrderIntentStoreConformance

    class TestDynamoIntents(OrderIntentStoreConformance):
        def make_store(self, tmp_path):
            return DynamoOrderIntentStore(table=f"intents-{tmp_path.name}")

``make_store(tmp_path)`` is called once per test, and again with the same ``tmp_path`` when a
test checks that intents survive reopening (stores declaring ``persistent = True``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aims_snaptrade.compliance.personal_data import PersonalDataStore
from aims_snaptrade.errors import SnapTradeOrderIntentStoreError
from aims_snaptrade.testing.forget_conformance import ForgetRule, assert_forgotten
from aims_snaptrade.trading.intents import OrderIntentStore
from aims_snaptrade.trading.models import OrderIntent

__all__ = ["OrderIntentStoreConformance", "make_intent"]


def make_intent(**changes: Any) -> OrderIntent:
    """A valid pending intent with a fresh ``client_order_id`` (fields overridable)."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "client_order_id": str(uuid.uuid4()),
        "kind": "force",
        "user_id": "user-1",
        "account_id": "account-1",
        "action": "BUY",
        "symbol": "AAPL",
        "order_type": "Limit",
        "time_in_force": "Day",
        "units": Decimal("1.25"),
        "price": Decimal("187.0100"),
        "created_at": now,
        "sent_at": now,
    }
    values.update(changes)
    return OrderIntent(**values)


class OrderIntentStoreConformance(ForgetRule):
    """Behaviour every order-intent store must have."""

    #: Threads racing to record one client_order_id in the concurrency test.
    concurrency_threads: int = 8

    def make_store(self, tmp_path: Path) -> OrderIntentStore:
        """Return a store over the storage identified by ``tmp_path`` (fresh for every test)."""
        raise NotImplementedError("implement make_store(tmp_path) in your conformance subclass")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[OrderIntentStore]:
        """A fresh store, closed after the test."""
        store = self.make_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    def test_forgetting_a_user_leaves_no_byte_of_the_id(self, store: OrderIntentStore, tmp_path: Path) -> None:
        """The journal holds personal data: it exports and forgets a user (``export_user``,
        ``forget_user``), leaving no byte of the user's id or account ids; other users' intents stay."""
        assert isinstance(store, PersonalDataStore), (
            "an order-intent store holds personal data: implement export_user(user_id) and forget_user(user_id)"
        )
        gone, account, kept = "forget-intents-5a0b3c", "forget-intents-account-e41f", "keep-intents-9d2c77"
        store.record(make_intent(user_id=gone, account_id=account))
        store.record(make_intent(user_id=gone, account_id=account, status="placed", brokerage_order_id="b-1"))
        store.record(make_intent(user_id=kept))
        assert [i["user_id"] for i in store.export_user(gone)] == [gone, gone]
        assert store.forget_user(gone) == 2
        assert store.export_user(gone) == []
        assert len(store.export_user(kept)) == 1
        assert_forgotten(self._raw_or_skip(store, tmp_path), (gone, account), kept)

    def test_declares_its_traits(self, store: OrderIntentStore) -> None:
        assert isinstance(store, OrderIntentStore)
        assert isinstance(store.kind, str)
        assert store.kind
        assert isinstance(store.persistent, bool)

    def test_record_then_get_round_trips_exactly(self, store: OrderIntentStore) -> None:
        intent = make_intent()
        assert store.record(intent) is True
        assert store.get(intent.client_order_id) == intent
        assert store.get(str(uuid.uuid4())) is None

    def test_a_client_order_id_is_recorded_once(self, store: OrderIntentStore) -> None:
        intent = make_intent()
        assert store.record(intent) is True
        assert store.record(intent.model_copy(update={"units": Decimal(7)})) is False
        assert store.get(intent.client_order_id) == intent

    def test_update_settles_and_pending_lists_only_pending(self, store: OrderIntentStore) -> None:
        old = make_intent(created_at=datetime.now(UTC) - timedelta(minutes=5))
        new = make_intent()
        done = make_intent(account_id="account-2")
        for intent in (new, old, done):
            assert store.record(intent)
        placed = done.model_copy(update={"status": "placed", "brokerage_order_id": "order-9"})
        store.update(placed)
        assert store.get(done.client_order_id) == placed
        assert [i.client_order_id for i in store.pending()] == [old.client_order_id, new.client_order_id]
        assert store.claimed_order_ids("account-2") == ["order-9"]
        assert store.claimed_order_ids("account-1") == []

    def test_update_of_an_unknown_intent_fails(self, store: OrderIntentStore) -> None:
        with pytest.raises(SnapTradeOrderIntentStoreError):
            store.update(make_intent())

    def test_concurrent_records_of_one_id_have_one_winner(self, store: OrderIntentStore) -> None:
        intent = make_intent()
        results: list[bool] = []
        barrier = threading.Barrier(self.concurrency_threads)

        def race() -> None:
            barrier.wait()
            results.append(store.record(intent))

        threads = [threading.Thread(target=race) for _ in range(self.concurrency_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False] * (self.concurrency_threads - 1) + [True]

    def test_intents_survive_reopening(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        if not store.persistent:
            store.close()
            pytest.skip("the store is not persistent")
        intent = make_intent()
        try:
            store.record(intent)
        finally:
            store.close()
        reopened = self.make_store(tmp_path)
        try:
            assert reopened.get(intent.client_order_id) == intent
            assert intent.client_order_id in [i.client_order_id for i in reopened.pending()]
        finally:
            reopened.close()

    def test_a_closed_store_refuses_calls(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        store.close()
        with pytest.raises(SnapTradeOrderIntentStoreError):
            store.record(make_intent())
