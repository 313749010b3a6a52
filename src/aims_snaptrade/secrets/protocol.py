"""The extension point: what a store of SnapTrade user secrets must do.

:class:`SecretStore` is what the clients call. Any object with these methods works (Vault, a cloud
secrets manager, a team's own database); run
:class:`aims_snaptrade.testing.secret_store_conformance.SecretStoreConformance` against it.

Stores must also declare three plain attributes that guardrails read (the conformance suite
checks them): ``kind`` (a short name such as ``"sqlite"``), ``persistent`` (``False`` for stores
that forget everything when the process exits) and ``encrypted`` (``True`` when secrets are
encrypted at rest). Production guardrails refuse a store unless it declares both ``persistent``
and ``encrypted`` as ``True``: a store without the attributes is refused (fails closed).

Name a custom store by URL scheme by registering its factory in the
``aims_snaptrade.secret_stores`` entry-point group (see :mod:`aims_snaptrade.store_registry`).

The async client calls a synchronous store through :class:`AsyncSecretStoreAdapter`, which runs
each call in a worker thread (``asyncio.to_thread``), so every store must be thread-safe.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "AsyncSecretStore",
    "AsyncSecretStoreAdapter",
    "BatchOutcome",
    "KeyRotatable",
    "SecretStore",
]


@runtime_checkable
class SecretStore(Protocol):
    """Durable, thread-safe storage of SnapTrade user secrets keyed by user id.

    Contract (checked by the conformance suite):

    * ``put`` and the rotation methods are durable when they return (committed and flushed).
    * ``get`` returns exactly what the last ``put``/``complete_rotation`` stored, or ``None``.
    * A user-secret rotation is ``begin_rotation`` (durable marker) -> SnapTrade
      ``resetUserSecret`` -> ``complete_rotation`` (new secret and marker cleared atomically),
      or ``abort_rotation`` when the reset call definitely failed. A marker left by a crash is
      listed by ``pending_rotations`` until resolved.
    * Failures raise :class:`~aims_snaptrade.errors.SnapTradeSecretStoreError` (or a subclass);
      an undecryptable row raises :class:`~aims_snaptrade.errors.SnapTradeSecretDecryptionError`.
    """

    def get(self, user_id: str) -> str | None:
        """Return the user's decrypted secret, or ``None`` when none is stored."""
        ...

    def put(self, user_id: str, secret: str) -> None:
        """Store (or overwrite) the user's secret; durable when this returns."""
        ...

    def delete(self, user_id: str) -> bool:
        """Purge the user's secret and any rotation marker; ``True`` if something was removed."""
        ...

    def user_ids(self) -> list[str]:
        """Every user id with a stored secret, sorted."""
        ...

    def begin_rotation(self, user_id: str) -> None:
        """Durably mark a rotation as pending before ``resetUserSecret`` is sent.

        Raises :class:`~aims_snaptrade.errors.SnapTradeSecretStoreError` if no secret is stored for
        the user, and :class:`~aims_snaptrade.errors.SnapTradeSecretRotationError` if an earlier
        rotation of this user is still pending (resolve that one first).
        """
        ...

    def complete_rotation(self, user_id: str, new_secret: str) -> None:
        """Atomically store the new secret and clear the pending marker; durable when it returns."""
        ...

    def abort_rotation(self, user_id: str) -> None:
        """Clear the pending marker and keep the old secret (the reset call definitely failed)."""
        ...

    def pending_rotations(self) -> list[str]:
        """User ids whose rotation was begun but neither completed nor aborted, sorted."""
        ...

    def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...


@runtime_checkable
class AsyncSecretStore(Protocol):
    """The async twin of :class:`SecretStore`, for stores with a native async driver."""

    async def get(self, user_id: str) -> str | None:
        """See :meth:`SecretStore.get`."""
        ...

    async def put(self, user_id: str, secret: str) -> None:
        """See :meth:`SecretStore.put`."""
        ...

    async def delete(self, user_id: str) -> bool:
        """See :meth:`SecretStore.delete`."""
        ...

    async def user_ids(self) -> list[str]:
        """See :meth:`SecretStore.user_ids`."""
        ...

    async def begin_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.begin_rotation`."""
        ...

    async def complete_rotation(self, user_id: str, new_secret: str) -> None:
        """See :meth:`SecretStore.complete_rotation`."""
        ...

    async def abort_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.abort_rotation`."""
        ...

    async def pending_rotations(self) -> list[str]:
        """See :meth:`SecretStore.pending_rotations`."""
        ...

    async def close(self) -> None:
        """See :meth:`SecretStore.close`."""
        ...


class AsyncSecretStoreAdapter:
    """Expose a thread-safe :class:`SecretStore` as an :class:`AsyncSecretStore`.

    Each call runs in the default executor via :func:`asyncio.to_thread`, so a slow disk or
    database never blocks the event loop. Note that a cancelled ``await`` does not cancel the
    thread: a ``put`` whose caller was cancelled still completes.
    """

    def __init__(self, store: SecretStore) -> None:
        """Wrap ``store``."""
        self.store = store

    async def get(self, user_id: str) -> str | None:
        """See :meth:`SecretStore.get`."""
        return await asyncio.to_thread(self.store.get, user_id)

    async def put(self, user_id: str, secret: str) -> None:
        """See :meth:`SecretStore.put`."""
        await asyncio.to_thread(self.store.put, user_id, secret)

    async def delete(self, user_id: str) -> bool:
        """See :meth:`SecretStore.delete`."""
        return await asyncio.to_thread(self.store.delete, user_id)

    async def user_ids(self) -> list[str]:
        """See :meth:`SecretStore.user_ids`."""
        return await asyncio.to_thread(self.store.user_ids)

    async def begin_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.begin_rotation`."""
        await asyncio.to_thread(self.store.begin_rotation, user_id)

    async def complete_rotation(self, user_id: str, new_secret: str) -> None:
        """See :meth:`SecretStore.complete_rotation`."""
        await asyncio.to_thread(self.store.complete_rotation, user_id, new_secret)

    async def abort_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.abort_rotation`."""
        await asyncio.to_thread(self.store.abort_rotation, user_id)

    async def pending_rotations(self) -> list[str]:
        """See :meth:`SecretStore.pending_rotations`."""
        return await asyncio.to_thread(self.store.pending_rotations)

    async def close(self) -> None:
        """See :meth:`SecretStore.close`."""
        await asyncio.to_thread(self.store.close)

    def __repr__(self) -> str:
        return f"AsyncSecretStoreAdapter({self.store!r})"


@dataclass(frozen=True)
class BatchOutcome:
    """What one :meth:`KeyRotatable.reencrypt_batch` call did.

    Attributes:
        last_user_id: The last user id examined; pass it as ``after`` to continue, ``None`` when
            there was nothing left to examine.
        scanned: Rows examined.
        reencrypted: Rows rewritten under the current key.
        already_current: Rows already under the current key (or changed concurrently by a writer).
        failed: User ids whose secret could not be decrypted with any key in the keyring.
    """

    last_user_id: str | None
    scanned: int = 0
    reencrypted: int = 0
    already_current: int = 0
    failed: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class KeyRotatable(Protocol):
    """A store whose rows :func:`aims_snaptrade.secrets.rotate_keys` can re-encrypt.

    Stores that delegate encryption to their backend (Vault, KMS) need not implement it.
    """

    def reencrypt_batch(self, after: str | None, limit: int) -> BatchOutcome:
        """Re-encrypt up to ``limit`` rows with ``user_id > after`` (in user-id order) to the
        current key in one transaction; rows changed meanwhile by a writer are left alone."""
        ...

    def key_version_counts(self) -> dict[str, int]:
        """How many rows each key version holds (``"plaintext"`` for unencrypted rows)."""
        ...

    def current_key_version(self) -> str:
        """The key version new rows are written with (``"plaintext"`` without a keyring)."""
        ...
