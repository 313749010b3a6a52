"""A conformance suite any :class:`~aims_snaptrade.secrets.SecretStore` can run against itself.

Subclass :class:`SecretStoreConformance` in a test module under a ``Test*`` name and implement
:meth:`~SecretStoreConformance.make_store`; pytest collects every inherited test::

    from aims_snaptrade.testing.secret_store_conformance import SecretStoreConformance

    class TestVaultStore(SecretStoreConformance):
        def make_store(self, tmp_path):
            return VaultSecretStore(url=VAULT_URL, mount=f"test-{tmp_path.name}")

``make_store(tmp_path)`` is called once per test, and again with the same ``tmp_path`` when a
test checks that data survives reopening (only for stores declaring ``persistent = True``):
storage keyed on ``tmp_path`` gives each test a clean store and each reopen the same one.

Stores that can show their raw storage (file bytes, table rows) should also subclass
:class:`EncryptedAtRestConformance` to prove no secret is stored in clear, and implement
``make_store_with_keyring(tmp_path, keyring)`` so undecryptable rows are checked too.

Every rule docs/secret-stores.md states for a store is one test here (the page lists them).

The suite needs ``pytest`` only (no pytest-asyncio: the async adapter is driven by
``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aims_snaptrade.errors import (
    SnapTradeSecretDecryptionError,
    SnapTradeSecretRotationError,
    SnapTradeSecretStoreError,
)
from aims_snaptrade.secrets.crypto import Keyring
from aims_snaptrade.secrets.protocol import AsyncSecretStoreAdapter, KeyRotatable, SecretStore
from aims_snaptrade.testing.forget_conformance import ForgetRule, assert_forgotten, files_under

__all__ = ["EncryptedAtRestConformance", "SecretStoreConformance"]


class SecretStoreConformance(ForgetRule):
    """Behaviour every secret store must have. Subclass as ``Test<Something>`` and implement
    :meth:`make_store`."""

    #: Threads used by the concurrency test; lower it for slow remote backends.
    concurrency_threads: int = 8
    #: Writes per thread in the concurrency test.
    concurrency_writes: int = 25

    def make_store(self, tmp_path: Path) -> SecretStore:
        """Return a store over the storage identified by ``tmp_path`` (fresh for every test)."""
        raise NotImplementedError("implement make_store(tmp_path) in your conformance subclass")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SecretStore]:
        """A fresh store, closed after the test."""
        store = self.make_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    # -- identity and traits ----------------------------------------------------------------

    def test_is_a_secret_store(self, store: SecretStore) -> None:
        """The store satisfies the runtime-checkable protocol."""
        assert isinstance(store, SecretStore)

    def test_declares_traits_for_guardrails(self, store: SecretStore) -> None:
        """``kind``, ``persistent`` and ``encrypted`` are present so guardrails can judge the store."""
        kind = getattr(store, "kind", None)
        assert isinstance(kind, str)
        assert kind
        assert isinstance(getattr(store, "persistent", None), bool)
        assert isinstance(getattr(store, "encrypted", None), bool)

    # -- basic storage ----------------------------------------------------------------------

    def test_get_of_unknown_user_is_none(self, store: SecretStore) -> None:
        """A user never stored has no secret."""
        assert store.get("conformance-nobody") is None

    def test_put_then_get_returns_the_secret(self, store: SecretStore) -> None:
        """What was put comes back exactly."""
        store.put("conformance-u1", "secret-one-0123456789")
        assert store.get("conformance-u1") == "secret-one-0123456789"

    def test_put_overwrites(self, store: SecretStore) -> None:
        """A second put replaces the first."""
        store.put("conformance-u1", "secret-first-aaaaaa")
        store.put("conformance-u1", "secret-second-bbbbbb")
        assert store.get("conformance-u1") == "secret-second-bbbbbb"
        assert store.user_ids().count("conformance-u1") == 1

    def test_users_are_kept_apart(self, store: SecretStore) -> None:
        """Each user gets their own secret."""
        store.put("conformance-a", "secret-of-a-111111")
        store.put("conformance-b", "secret-of-b-222222")
        assert store.get("conformance-a") == "secret-of-a-111111"
        assert store.get("conformance-b") == "secret-of-b-222222"

    def test_unicode_and_long_values_round_trip(self, store: SecretStore) -> None:
        """User ids and secrets are arbitrary text, not just ASCII."""
        user = "conformance-ü/用户|x y'\";--"
        secret = "sécret-🔑-" + "x" * 4000
        store.put(user, secret)
        assert store.get(user) == secret
        assert user in store.user_ids()

    def test_delete_purges(self, store: SecretStore) -> None:
        """Delete removes the secret, reports whether it did, and is idempotent."""
        store.put("conformance-gone", "secret-to-delete-333")
        assert store.delete("conformance-gone") is True
        assert store.get("conformance-gone") is None
        assert "conformance-gone" not in store.user_ids()
        assert store.delete("conformance-gone") is False

    def test_user_ids_lists_every_user_sorted(self, store: SecretStore) -> None:
        """``user_ids`` lists exactly the stored users, sorted."""
        for user in ("conformance-c", "conformance-a", "conformance-b"):
            store.put(user, f"secret-for-{user}")
        assert store.user_ids() == ["conformance-a", "conformance-b", "conformance-c"]

    # -- user-secret rotation ---------------------------------------------------------------

    def test_rotation_completed(self, store: SecretStore) -> None:
        """begin -> pending (old secret still served) -> complete -> new secret, nothing pending."""
        store.put("conformance-rot", "secret-old-444444")
        store.begin_rotation("conformance-rot")
        assert store.pending_rotations() == ["conformance-rot"]
        assert store.get("conformance-rot") == "secret-old-444444"
        store.complete_rotation("conformance-rot", "secret-new-555555")
        assert store.get("conformance-rot") == "secret-new-555555"
        assert store.pending_rotations() == []

    def test_rotation_aborted_keeps_old_secret(self, store: SecretStore) -> None:
        """abort clears the marker and keeps the old secret."""
        store.put("conformance-rot", "secret-old-444444")
        store.begin_rotation("conformance-rot")
        store.abort_rotation("conformance-rot")
        assert store.get("conformance-rot") == "secret-old-444444"
        assert store.pending_rotations() == []

    def test_begin_rotation_of_unknown_user_fails(self, store: SecretStore) -> None:
        """There is nothing to rotate for a user without a secret."""
        with pytest.raises(SnapTradeSecretStoreError):
            store.begin_rotation("conformance-nobody")
        assert store.pending_rotations() == []

    def test_begin_rotation_twice_fails_until_resolved(self, store: SecretStore) -> None:
        """An unresolved rotation must be resolved before another starts."""
        store.put("conformance-rot", "secret-old-444444")
        store.begin_rotation("conformance-rot")
        with pytest.raises(SnapTradeSecretRotationError):
            store.begin_rotation("conformance-rot")
        store.abort_rotation("conformance-rot")
        store.begin_rotation("conformance-rot")
        assert store.pending_rotations() == ["conformance-rot"]

    def test_pending_rotations_lists_only_pending_users(self, store: SecretStore) -> None:
        """Only users with a begun, unresolved rotation are listed, sorted."""
        for user in ("conformance-p2", "conformance-p1", "conformance-idle"):
            store.put(user, f"secret-for-{user}")
        store.begin_rotation("conformance-p2")
        store.begin_rotation("conformance-p1")
        assert store.pending_rotations() == ["conformance-p1", "conformance-p2"]

    def test_complete_rotation_without_begin_still_stores(self, store: SecretStore) -> None:
        """A secret SnapTrade issued must never be dropped, marker or not."""
        store.put("conformance-rot", "secret-old-444444")
        store.complete_rotation("conformance-rot", "secret-new-555555")
        assert store.get("conformance-rot") == "secret-new-555555"
        store.complete_rotation("conformance-never-stored", "secret-issued-121212")
        assert store.get("conformance-never-stored") == "secret-issued-121212"
        assert store.pending_rotations() == []

    def test_complete_rotation_recreates_a_row_deleted_meanwhile(self, store: SecretStore) -> None:
        """A row deleted between ``begin_rotation`` and ``complete_rotation`` is written again."""
        store.put("conformance-rot", "secret-old-444444")
        store.begin_rotation("conformance-rot")
        assert store.delete("conformance-rot") is True
        store.complete_rotation("conformance-rot", "secret-new-555555")
        assert store.get("conformance-rot") == "secret-new-555555"
        assert store.user_ids() == ["conformance-rot"]
        assert store.pending_rotations() == []

    def test_put_keeps_a_pending_rotation_marker(self, store: SecretStore) -> None:
        """``put`` during a pending rotation replaces the secret but keeps the marker."""
        store.put("conformance-rot", "secret-old-444444")
        store.begin_rotation("conformance-rot")
        store.put("conformance-rot", "secret-put-131313")
        assert store.pending_rotations() == ["conformance-rot"]
        assert store.get("conformance-rot") == "secret-put-131313"
        with pytest.raises(SnapTradeSecretRotationError):
            store.begin_rotation("conformance-rot")  # still pending: the put did not resolve it
        store.complete_rotation("conformance-rot", "secret-new-555555")
        assert store.pending_rotations() == []

    def test_abort_without_begin_is_harmless(self, store: SecretStore) -> None:
        """Aborting nothing changes nothing."""
        store.put("conformance-rot", "secret-old-444444")
        store.abort_rotation("conformance-rot")
        store.abort_rotation("conformance-nobody")
        assert store.get("conformance-rot") == "secret-old-444444"

    def test_delete_clears_a_pending_rotation(self, store: SecretStore) -> None:
        """Deleting a user (the recovery path) also forgets its rotation marker."""
        store.put("conformance-rot", "secret-old-444444")
        store.begin_rotation("conformance-rot")
        assert store.delete("conformance-rot") is True
        assert store.pending_rotations() == []
        store.put("conformance-rot", "secret-again-141414")
        assert store.pending_rotations() == []  # a new row starts without the old marker
        store.begin_rotation("conformance-rot")
        assert store.pending_rotations() == ["conformance-rot"]

    def test_abort_then_complete_is_a_plain_store(self, store: SecretStore) -> None:
        """After an abort, a late ``complete_rotation`` still stores the secret it carries."""
        store.put("conformance-rot", "secret-old-444444")
        store.begin_rotation("conformance-rot")
        store.abort_rotation("conformance-rot")
        store.complete_rotation("conformance-rot", "secret-late-151515")
        assert store.get("conformance-rot") == "secret-late-151515"
        assert store.pending_rotations() == []

    # -- durability -------------------------------------------------------------------------

    def test_persistent_store_survives_reopen(self, store: SecretStore, tmp_path: Path) -> None:
        """A persistent store keeps secrets and rotation markers across instances."""
        store.put("conformance-durable", "secret-durable-666666")
        store.put("conformance-rot", "secret-old-444444")
        store.begin_rotation("conformance-rot")
        if not getattr(store, "persistent", True):
            # Nothing to reopen: the store says it keeps nothing beyond itself.
            assert store.get("conformance-durable") == "secret-durable-666666"
            return
        store.close()
        again = self.make_store(tmp_path)
        try:
            assert again.get("conformance-durable") == "secret-durable-666666"
            assert again.pending_rotations() == ["conformance-rot"]
            assert again.get("conformance-rot") == "secret-old-444444"
        finally:
            again.close()

    # -- concurrency, hygiene, async --------------------------------------------------------

    def test_concurrent_writers_lose_nothing(self, store: SecretStore) -> None:
        """Threads writing at once (as ``asyncio.to_thread`` does) lose no write."""
        errors: list[BaseException] = []

        def writer(index: int) -> None:
            try:
                for n in range(self.concurrency_writes):
                    store.put(f"conformance-t{index}-{n}", f"secret-t{index}-{n}-777777")
                    store.get(f"conformance-t{index}-{max(0, n - 1)}")
            except BaseException as exc:  # surfaced below: a thread's failure must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(self.concurrency_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for index in range(self.concurrency_threads):
            for n in range(self.concurrency_writes):
                assert store.get(f"conformance-t{index}-{n}") == f"secret-t{index}-{n}-777777"
        assert len(store.user_ids()) == self.concurrency_threads * self.concurrency_writes

    def test_repr_and_str_show_no_secret(self, store: SecretStore) -> None:
        """Printing or logging the store never shows a secret it holds."""
        store.put("conformance-u1", "secret-never-printed-888888")
        assert "secret-never-printed-888888" not in repr(store)
        assert "secret-never-printed-888888" not in str(store)

    def test_async_adapter(self, store: SecretStore) -> None:
        """The async adapter drives the store from an event loop."""

        async def scenario() -> None:
            adapter = AsyncSecretStoreAdapter(store)
            await adapter.put("conformance-async", "secret-async-999999")
            assert await adapter.get("conformance-async") == "secret-async-999999"
            await adapter.begin_rotation("conformance-async")
            assert await adapter.pending_rotations() == ["conformance-async"]
            await adapter.complete_rotation("conformance-async", "secret-async-new-000")
            assert await adapter.get("conformance-async") == "secret-async-new-000"
            assert await adapter.user_ids() == ["conformance-async"]
            assert await adapter.delete("conformance-async") is True

        asyncio.run(scenario())

    def test_close_is_idempotent(self, store: SecretStore) -> None:
        """Closing twice is fine."""
        store.close()
        store.close()

    def stored_bytes(self, store: SecretStore, tmp_path: Path) -> bytes:
        """What the forget rule reads: ``raw_storage`` when the suite has it, else the files under ``tmp_path``."""
        raw_storage = getattr(self, "raw_storage", None)
        if raw_storage is not None:
            return bytes(raw_storage(store))
        return files_under(tmp_path)

    def test_forgetting_a_user_leaves_no_byte_of_the_id(self, store: SecretStore, tmp_path: Path) -> None:
        """``delete`` leaves no byte of the user's id or secret in the storage (WAL included)."""
        gone, secret, kept = "forget-secret-user-6e2a90", "forget-secret-value-Qx71zP0c", "keep-secret-user-13bd5e"
        store.put(gone, secret)
        store.begin_rotation(gone)
        store.complete_rotation(gone, secret + "-rotated")
        store.put(kept, "keep-secret-value-88")
        assert store.delete(gone) is True
        assert store.get(gone) is None
        assert gone not in store.user_ids()
        # The other user's id is not asserted: an encrypted raw_storage may hold only ciphertext.
        assert_forgotten(self._raw_or_skip(store, tmp_path), (gone, secret), None)


class EncryptedAtRestConformance:
    """For stores whose raw storage a test can read: no secret may appear in it.

    Mix into a :class:`SecretStoreConformance` subclass and implement :meth:`raw_storage`.
    """

    def raw_storage(self, store: SecretStore) -> bytes:
        """Every byte the backend holds for this store (file contents, dumped rows)."""
        raise NotImplementedError("implement raw_storage(store) in your conformance subclass")

    def test_declares_encrypted(self, store: SecretStore) -> None:
        """An encrypted store says so (guardrails rely on it)."""
        assert getattr(store, "encrypted", None) is True

    def make_store_with_keyring(self, tmp_path: Path, keyring: Keyring) -> SecretStore | None:
        """Optional: a store over the same storage as ``make_store(tmp_path)`` with another keyring.

        Return ``None`` (the default) when the store takes no keyring or keeps nothing across
        instances; the decryption test is then skipped, saying why.
        """
        return None

    def test_undecryptable_rows_raise_the_typed_error(self, store: SecretStore, tmp_path: Path) -> None:
        """A row under a key the keyring lacks, or under a wrong key of the same name, raises
        :class:`~aims_snaptrade.errors.SnapTradeSecretDecryptionError` (never garbage, never ``None``)."""
        store.put("conformance-locked", "secret-locked-161616")
        store.close()
        for version in ("v-missing", _current_version(store)):
            other = self.make_store_with_keyring(tmp_path, Keyring.generate(version))
            if other is None:
                pytest.skip("make_store_with_keyring returned None: decryption failures are not checked for this store")
            try:
                with pytest.raises(SnapTradeSecretDecryptionError):
                    other.get("conformance-locked")
            finally:
                other.close()

    def test_no_plaintext_secret_in_raw_storage(self, store: SecretStore) -> None:
        """Neither the secret nor a long piece of it is readable in the raw storage."""
        secret = "plaintext-canary-Zq81xT0pLm2vK9"
        store.put("conformance-canary", secret)
        store.put("conformance-canary-2", secret + "-two")
        store.begin_rotation("conformance-canary")
        store.complete_rotation("conformance-canary", secret + "-rotated")
        raw = self.raw_storage(store)
        assert raw, "raw_storage returned nothing: it cannot prove anything"
        for encoding in ("utf-8", "utf-16-le"):
            assert secret.encode(encoding) not in raw
            assert secret[8:24].encode(encoding) not in raw


def _current_version(store: SecretStore) -> str:
    # The key version the store writes with, so the second probe is "right name, wrong key".
    return store.current_key_version() if isinstance(store, KeyRotatable) else "v1"
