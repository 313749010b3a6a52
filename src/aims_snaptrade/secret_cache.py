"""A bounded in-process cache of decrypted user secrets, so a call does not read the store each time.

The security trade-off, documented in docs/performance.md: a decrypted secret stays in this
process's memory while it is cached (it is there during every call anyway), never on disk and
never in a log (every cached secret is registered for redaction). ``secret_cache_size=0``
turns the cache off.

Staleness: a secret rotated or deleted through another replica is only discovered by SnapTrade
rejecting the cached one (401, code 1083, which SnapTrade never processes). The road then drops
the entry, reads the store again and, if the store holds a different secret, resends once: the
cache never outlives a rotation or deletion by more than one rejected request. Rotations and
deletions made through this client update the cache directly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["SecretCache"]


class SecretCache:
    """Least-recently-used ``user_id -> secret`` map of at most ``size`` entries, safe across threads."""

    __slots__ = ("_entries", "_lock", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_id: str) -> str | None:
        """The cached secret of ``user_id``, or ``None``."""
        with self._lock:
            secret = self._entries.get(user_id)
            if secret is not None:
                self._entries.move_to_end(user_id)
            return secret

    def put(self, user_id: str, secret: str) -> None:
        """Remember ``secret`` as the current secret of ``user_id``."""
        if self.size <= 0:
            return
        with self._lock:
            self._entries[user_id] = secret
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop ``user_id``'s entry (after a rotation, deletion or a 1083)."""
        with self._lock:
            self._entries.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"SecretCache(size={self.size}, entries={len(self._entries)})"
