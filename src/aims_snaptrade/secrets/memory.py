"""An in-process store for tests. It forgets everything at exit; production guardrails refuse it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from aims_snaptrade.errors import SnapTradeSecretStoreError
from aims_snaptrade.secrets._rows import (
    StoredRow,
    already_pending,
    check_secret,
    check_user_id,
    outcome,
    plan_reencrypt,
)
from aims_snaptrade.secrets.crypto import Keyring, SecretCodec
from aims_snaptrade.secrets.protocol import BatchOutcome

__all__ = ["MemorySecretStore"]


@dataclass
class _Row:
    key_version: str
    blob: bytes
    pending_since: float | None = None


class MemorySecretStore:
    """A dict behind a lock. **Tests only**: ``persistent`` is ``False`` and guardrails refuse it.

    With a ``keyring`` the secrets are held encrypted exactly like the SQL stores hold them, which
    makes it a fast stand-in for testing key rotation; without one they are held as plain bytes.
    """

    kind = "memory"
    persistent = False
    blocking = False  # never waits on IO: the async client calls it without a thread hop

    def __init__(self, keyring: Keyring | None = None) -> None:
        """Create an empty store, encrypting with ``keyring`` when one is given."""
        self._codec = SecretCodec(keyring)
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def encrypted(self) -> bool:
        """``True`` when secrets are held encrypted."""
        return self._codec.encrypted

    def _check_open(self) -> None:
        if self._closed:
            raise SnapTradeSecretStoreError("the memory secret store is closed")

    def get(self, user_id: str) -> str | None:
        """See :meth:`SecretStore.get`."""
        check_user_id(user_id)
        with self._lock:
            self._check_open()
            row = self._rows.get(user_id)
            if row is None:
                return None
            version, blob = row.key_version, row.blob
        return self._codec.open(user_id, version, blob)

    def put(self, user_id: str, secret: str) -> None:
        """See :meth:`SecretStore.put`."""
        check_user_id(user_id)
        version, blob = self._codec.seal(user_id, check_secret(secret))
        with self._lock:
            self._check_open()
            row = self._rows.get(user_id)
            pending = row.pending_since if row is not None else None
            self._rows[user_id] = _Row(version, blob, pending)

    def delete(self, user_id: str) -> bool:
        """See :meth:`SecretStore.delete`."""
        check_user_id(user_id)
        with self._lock:
            self._check_open()
            return self._rows.pop(user_id, None) is not None

    def user_ids(self) -> list[str]:
        """See :meth:`SecretStore.user_ids`."""
        with self._lock:
            self._check_open()
            return sorted(self._rows)

    def begin_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.begin_rotation`."""
        check_user_id(user_id)
        with self._lock:
            self._check_open()
            row = self._rows.get(user_id)
            if row is None:
                raise SnapTradeSecretStoreError(f"no secret is stored for user {user_id!r}; nothing to rotate")
            if row.pending_since is not None:
                raise already_pending(user_id)
            row.pending_since = time.time()

    def complete_rotation(self, user_id: str, new_secret: str) -> None:
        """See :meth:`SecretStore.complete_rotation`."""
        check_user_id(user_id)
        version, blob = self._codec.seal(user_id, check_secret(new_secret))
        with self._lock:
            self._check_open()
            self._rows[user_id] = _Row(version, blob, None)

    def abort_rotation(self, user_id: str) -> None:
        """See :meth:`SecretStore.abort_rotation`."""
        check_user_id(user_id)
        with self._lock:
            self._check_open()
            row = self._rows.get(user_id)
            if row is not None:
                row.pending_since = None

    def pending_rotations(self) -> list[str]:
        """See :meth:`SecretStore.pending_rotations`."""
        with self._lock:
            self._check_open()
            return sorted(uid for uid, row in self._rows.items() if row.pending_since is not None)

    def reencrypt_batch(self, after: str | None, limit: int) -> BatchOutcome:
        """See :meth:`KeyRotatable.reencrypt_batch`."""
        with self._lock:
            self._check_open()
            ids = sorted(uid for uid in self._rows if after is None or uid > after)[:limit]
            rows = [StoredRow(uid, self._rows[uid].key_version, self._rows[uid].blob) for uid in ids]
            rewrites, already, failed, last = plan_reencrypt(self._codec, rows)
            for rewrite in rewrites:
                row = self._rows[rewrite.user_id]
                row.key_version, row.blob = rewrite.new_version, rewrite.new_blob
            return outcome(rewrites, len(rewrites), already, failed, last, len(rows))

    def key_version_counts(self) -> dict[str, int]:
        """See :meth:`KeyRotatable.key_version_counts`."""
        with self._lock:
            self._check_open()
            counts: dict[str, int] = {}
            for row in self._rows.values():
                counts[row.key_version] = counts.get(row.key_version, 0) + 1
            return counts

    def current_key_version(self) -> str:
        """See :meth:`KeyRotatable.current_key_version`."""
        return self._codec.current_version

    def close(self) -> None:
        """Forget every secret. Idempotent."""
        with self._lock:
            self._rows.clear()
            self._closed = True

    def __repr__(self) -> str:
        return f"MemorySecretStore(encrypted={self.encrypted}, users={len(self._rows)})"
