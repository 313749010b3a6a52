"""The in-process secret cache: never outlives a rotation or deletion by more than one rejected request."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SnapTradeAuthError, SnapTradeNotFoundError
from aims_snaptrade.secret_cache import SecretCache
from aims_snaptrade.secrets import MemorySecretStore, SQLiteSecretStore

READ = "list_all_user_accounts"


def _rejected(emu: Any, user_id: str) -> int:
    return emu.journal.count(operation=READ, user_id=user_id, code="1083")


def test_rotation_through_another_replica_costs_exactly_one_rejected_request(make_client, emu, alice):
    replica_a, replica_b = make_client(), make_client()  # one store, two processes' worth of clients
    assert replica_a.list_accounts(alice.user_id)  # A caches the secret
    replica_b.rotate_user_secret(alice.user_id)
    assert replica_a.list_accounts(alice.user_id)  # the stale copy is rejected once, then the stored one works
    assert _rejected(emu, alice.user_id) == 1
    assert replica_a.list_accounts(alice.user_id)
    assert _rejected(emu, alice.user_id) == 1  # and cached from then on


def test_deletion_through_another_replica_is_one_rejected_request_then_not_found(make_client, emu, alice):
    replica_a, replica_b = make_client(), make_client()
    replica_a.list_accounts(alice.user_id)
    replica_b.delete_user(alice.user_id, confirm=True)
    with pytest.raises(SnapTradeAuthError):
        replica_a.list_accounts(alice.user_id)
    assert _rejected(emu, alice.user_id) == 1
    with pytest.raises(SnapTradeNotFoundError):  # the cache forgot it, the store has nothing
        replica_a.list_accounts(alice.user_id)
    assert _rejected(emu, alice.user_id) == 1


def test_a_1083_with_an_unchanged_store_is_not_resent(make_client, emu, alice):
    client = make_client()
    client.list_accounts(alice.user_id)
    emu.sdk().authentication.reset_snap_trade_user_secret(user_id=alice.user_id, user_secret=alice.user_secret)
    with pytest.raises(SnapTradeAuthError):
        client.list_accounts(alice.user_id)
    assert _rejected(emu, alice.user_id) == 1


class CountingStore(MemorySecretStore):
    """A real memory store that counts reads and records the thread that read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.threads: set[int] = set()

    def get(self, user_id: str) -> str | None:
        self.reads += 1
        self.threads.add(threading.get_ident())
        return super().get(user_id)


@pytest.mark.parametrize(("size", "reads"), [(0, 5), (10, 1)])
def test_cache_size_zero_reads_the_store_every_call(make_client, emu, size, reads):
    user = emu.connect("cache-user")
    store = CountingStore()
    store.put(user.user_id, user.user_secret)
    client = make_client(secret_store=store, secret_cache_size=size)
    for _ in range(5):
        client.list_accounts(user.user_id)
    assert store.reads == reads


def test_async_reads_an_in_memory_store_without_a_thread_hop_and_sqlite_with_one(make_async_client, emu, tmp_path):
    user = emu.connect("hop-user")

    class CountingSQLite(SQLiteSecretStore):
        threads: set[int]

        def get(self, user_id: str) -> str | None:
            self.threads.add(threading.get_ident())
            return super().get(user_id)

    memory = CountingStore()
    sqlite = CountingSQLite(tmp_path / "s.db")
    sqlite.threads = set()
    for store in (memory, sqlite):
        store.put(user.user_id, user.user_secret)

    async def read(store: Any) -> int:
        async with make_async_client(secret_store=store, secret_cache_size=0) as client:
            await client.list_accounts(user.user_id)
        return threading.get_ident()

    loop_thread = asyncio.run(read(memory))
    assert memory.threads == {loop_thread}
    loop_thread = asyncio.run(read(sqlite))
    assert sqlite.threads and loop_thread not in sqlite.threads
    sqlite.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 8), steps=st.lists(st.tuples(st.sampled_from(["get", "put", "forget"]), st.integers(0, 12))))
def test_cache_is_a_bounded_lru_map(size, steps):
    cache, model = SecretCache(size), {}  # the model: insertion-ordered dict, most recent last
    for action, n in steps:
        user = f"u{n}"
        if action == "put":
            model.pop(user, None)
            model[user] = f"s{n}"
            while len(model) > size:
                model.pop(next(iter(model)))
            cache.put(user, f"s{n}")
        elif action == "forget":
            model.pop(user, None)
            cache.forget(user)
        else:
            expected = model.get(user)
            if expected is not None:
                model[user] = model.pop(user)
            assert cache.get(user) == expected
        assert len(cache) == len(model) <= size


def test_rotation_and_deletion_through_this_client_cost_no_rejected_request(client, emu, alice):
    client.list_accounts(alice.user_id)
    client.rotate_user_secret(alice.user_id)
    assert client.list_accounts(alice.user_id)
    client.delete_user(alice.user_id, confirm=True)
    sent = len(emu.journal)
    with pytest.raises(SnapTradeNotFoundError):
        client.list_accounts(alice.user_id)
    assert len(emu.journal) == sent  # nothing was sent with the deleted user's secret
    assert _rejected(emu, alice.user_id) == 0
