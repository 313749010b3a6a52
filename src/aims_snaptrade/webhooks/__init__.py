"""Receiving SnapTrade webhooks: verify, parse, de-duplicate across replicas, hand to the service.

::

    from aims_snaptrade.webhooks import WebhookASGIApp, WebhookReceiver

    def on_event(event):                      # a typed event, once per webhookId
        ...

    receiver = WebhookReceiver(on_event, consumer_key=key, dedupe="redis://localhost:6379/0")
    app = WebhookASGIApp(receiver)            # uvicorn, or app.mount(...) in FastAPI/Starlette

See docs/webhooks.md. Nothing here needs a web framework.
"""

from __future__ import annotations

from aims_snaptrade.webhooks.asgi import WebhookASGIApp
from aims_snaptrade.webhooks.dedupe import (
    ClaimOutcome,
    MemoryWebhookDedupeStore,
    SQLiteWebhookDedupeStore,
    WebhookDedupeStore,
    open_webhook_dedupe_store,
)
from aims_snaptrade.webhooks.events import (
    EVENT_TYPES,
    AccountHoldingsUpdatedEvent,
    AccountRemovedEvent,
    AccountTransactionsInitialUpdateEvent,
    AccountTransactionsUpdatedEvent,
    ConnectionAddedEvent,
    ConnectionAttemptedEvent,
    ConnectionBrokenEvent,
    ConnectionDeletedEvent,
    ConnectionFailedEvent,
    ConnectionFixedEvent,
    ConnectionUpdatedEvent,
    GenericWebhookEvent,
    NewAccountAvailableEvent,
    TradeDetectionEvent,
    TradeUpdateEvent,
    UserDeletedEvent,
    UserRegisteredEvent,
    WebhookEvent,
    WebhookEventBase,
    parse_event,
)
from aims_snaptrade.webhooks.receiver import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_RETENTION_SECONDS,
    WebhookHandler,
    WebhookOutcome,
    WebhookReceiver,
    WebhookResponse,
)
from aims_snaptrade.webhooks.verify import (
    DEFAULT_TOLERANCE_SECONDS,
    SIGNATURE_HEADER,
    canonical_json,
    sign_webhook,
    verify_webhook,
)
from aims_snaptrade.webhooks.wsgi import WebhookWSGIApp

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_RETENTION_SECONDS",
    "DEFAULT_TOLERANCE_SECONDS",
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "AccountHoldingsUpdatedEvent",
    "AccountRemovedEvent",
    "AccountTransactionsInitialUpdateEvent",
    "AccountTransactionsUpdatedEvent",
    "ClaimOutcome",
    "ConnectionAddedEvent",
    "ConnectionAttemptedEvent",
    "ConnectionBrokenEvent",
    "ConnectionDeletedEvent",
    "ConnectionFailedEvent",
    "ConnectionFixedEvent",
    "ConnectionUpdatedEvent",
    "GenericWebhookEvent",
    "MemoryWebhookDedupeStore",
    "NewAccountAvailableEvent",
    "SQLiteWebhookDedupeStore",
    "TradeDetectionEvent",
    "TradeUpdateEvent",
    "UserDeletedEvent",
    "UserRegisteredEvent",
    "WebhookASGIApp",
    "WebhookDedupeStore",
    "WebhookEvent",
    "WebhookEventBase",
    "WebhookHandler",
    "WebhookOutcome",
    "WebhookReceiver",
    "WebhookResponse",
    "WebhookWSGIApp",
    "canonical_json",
    "open_webhook_dedupe_store",
    "parse_event",
    "sign_webhook",
    "verify_webhook",
]
