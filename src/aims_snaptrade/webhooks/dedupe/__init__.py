"""Webhook de-duplication stores: atomic claims on ``webhookId`` shared by a service's replicas.

Memory (one process), SQLite (one host), Redis and PostgreSQL (fleets), and custom stores by URL
scheme through the ``aims_snaptrade.webhook_dedupe_stores`` entry-point group. Redis and
PostgreSQL modules import their drivers only when such a store is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aims_snaptrade.webhooks.dedupe.factory import ENTRY_POINT_GROUP, open_webhook_dedupe_store
from aims_snaptrade.webhooks.dedupe.memory import MemoryWebhookDedupeStore
from aims_snaptrade.webhooks.dedupe.protocol import ClaimOutcome, WebhookDedupeStore
from aims_snaptrade.webhooks.dedupe.sqlite import SQLiteWebhookDedupeStore

if TYPE_CHECKING:
    from aims_snaptrade.webhooks.dedupe.postgres import PostgresWebhookDedupeStore
    from aims_snaptrade.webhooks.dedupe.redis import RedisWebhookDedupeStore

__all__ = [
    "ENTRY_POINT_GROUP",
    "ClaimOutcome",
    "MemoryWebhookDedupeStore",
    "PostgresWebhookDedupeStore",
    "RedisWebhookDedupeStore",
    "SQLiteWebhookDedupeStore",
    "WebhookDedupeStore",
    "open_webhook_dedupe_store",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresWebhookDedupeStore":
        from aims_snaptrade.webhooks.dedupe.postgres import PostgresWebhookDedupeStore

        return PostgresWebhookDedupeStore
    if name == "RedisWebhookDedupeStore":
        from aims_snaptrade.webhooks.dedupe.redis import RedisWebhookDedupeStore

        return RedisWebhookDedupeStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
