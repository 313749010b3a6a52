"""Claims in Redis, shared by every replica: ``SET NX PX`` takes a claim, scripts complete or release it.

Needs the ``redis`` extra. Keys are ``<prefix><webhookId>`` holding ``processing:<token>`` or
``done:<token>``, always with an expiry (the lease, then the retention), so nothing piles up.
"""

from __future__ import annotations

from typing import Any

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeWebhookDedupeStoreError
from aims_snaptrade.redaction import redact
from aims_snaptrade.webhooks.dedupe.protocol import ClaimOutcome

__all__ = ["DEFAULT_PREFIX", "RedisWebhookDedupeStore"]

DEFAULT_PREFIX = "aims_snaptrade:webhook:"

# Compare-and-set on the holder's token: a replica whose lease ran out cannot touch a claim
# another replica took over.
_COMPLETE = """
if redis.call('GET', KEYS[1]) == 'processing:' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'done:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == 'processing:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisWebhookDedupeStore:
    """Webhook claims in Redis (``redis://``, ``rediss://`` or ``unix://`` URL, or a client)."""

    kind = "redis"
    shared = True

    def __init__(self, url_or_client: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        """Connect (lazily, as redis-py does) to ``url_or_client``; keys start with ``prefix``."""
        try:
            import redis
        except ImportError:  # pragma: no cover - depends on the environment
            raise SnapTradeConfigurationError(
                "the Redis webhook dedupe store needs redis-py: pip install 'aims-snaptrade[redis]'"
            ) from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._owned = isinstance(url_or_client, str)
        try:
            self._redis: Any = redis.Redis.from_url(url_or_client) if self._owned else url_or_client
        except ValueError as exc:
            raise SnapTradeConfigurationError(f"invalid Redis URL for the webhook dedupe store: {exc}") from None
        self.prefix = prefix
        self._complete = self._redis.register_script(_COMPLETE)
        self._release = self._redis.register_script(_RELEASE)

    def _fail(self, exc: BaseException) -> SnapTradeWebhookDedupeStoreError:
        return SnapTradeWebhookDedupeStoreError(redact(f"the Redis webhook dedupe store failed: {exc}"))

    def claim(self, webhook_id: str, token: str, lease_seconds: float) -> ClaimOutcome:
        """See :meth:`WebhookDedupeStore.claim`."""
        key = self.prefix + webhook_id
        try:
            if self._redis.set(key, "processing:" + token, nx=True, px=_ms(lease_seconds)):
                return "claimed"
            held = self._redis.get(key)
        except self._errors as exc:
            raise self._fail(exc) from None
        # None: the holder released it between the two calls; the sender redelivers.
        if isinstance(held, bytes):
            held = held.decode("utf-8", "replace")
        return "processed" if isinstance(held, str) and held.startswith("done:") else "in_progress"

    def complete(self, webhook_id: str, token: str, retention_seconds: float) -> bool:
        """See :meth:`WebhookDedupeStore.complete`."""
        try:
            return bool(self._complete(keys=[self.prefix + webhook_id], args=[token, _ms(retention_seconds)]))
        except self._errors as exc:
            raise self._fail(exc) from None

    def release(self, webhook_id: str, token: str) -> bool:
        """See :meth:`WebhookDedupeStore.release`."""
        try:
            return bool(self._release(keys=[self.prefix + webhook_id], args=[token]))
        except self._errors as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        """Close the connection pool if this store made it. Idempotent."""
        if self._owned:
            self._redis.close()

    def __repr__(self) -> str:
        return f"RedisWebhookDedupeStore(prefix={self.prefix!r})"
