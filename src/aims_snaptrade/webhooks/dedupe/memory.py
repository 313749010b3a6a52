"""In-process claims: one receiver process, or tests. Replicas need Redis or PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from aims_snaptrade.webhooks.dedupe.protocol import ClaimOutcome

__all__ = ["MemoryWebhookDedupeStore"]

_PURGE_EVERY = 1024


class MemoryWebhookDedupeStore:
    """Claims in a dict behind a lock; expired entries are purged as claims arrive."""

    kind = "memory"
    shared = False

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        """An empty store; ``clock`` (seconds) decides expiry."""
        self._clock = clock
        self._lock = threading.Lock()
        # webhook id -> (state, token, expires_at)
        self._entries: dict[str, tuple[str, str, float]] = {}
        self._claims = 0

    def claim(self, webhook_id: str, token: str, lease_seconds: float) -> ClaimOutcome:
        """See :meth:`WebhookDedupeStore.claim`."""
        with self._lock:
            now = self._clock()
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                self._entries = {k: v for k, v in self._entries.items() if v[2] > now}
            entry = self._entries.get(webhook_id)
            if entry is not None and entry[2] > now:
                return "processed" if entry[0] == "done" else "in_progress"
            self._entries[webhook_id] = ("processing", token, now + lease_seconds)
            return "claimed"

    def complete(self, webhook_id: str, token: str, retention_seconds: float) -> bool:
        """See :meth:`WebhookDedupeStore.complete`."""
        with self._lock:
            entry = self._entries.get(webhook_id)
            if entry is None or entry[:2] != ("processing", token):
                return False
            self._entries[webhook_id] = ("done", token, self._clock() + retention_seconds)
            return True

    def release(self, webhook_id: str, token: str) -> bool:
        """See :meth:`WebhookDedupeStore.release`."""
        with self._lock:
            entry = self._entries.get(webhook_id)
            if entry is None or entry[:2] != ("processing", token):
                return False
            del self._entries[webhook_id]
            return True

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryWebhookDedupeStore({len(self._entries)} entries)"
