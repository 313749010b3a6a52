"""The service of the end-to-end webhook-to-sync test (``uvicorn --factory sync_webhook_service:create_app``).

Its webhook handler only marks the sync ledger (``client.mark_from_webhook``: no SnapTrade request);
the client, the ledger and the receiver's dedupe store come from the ``SNAPTRADE_*`` environment.
"""

from __future__ import annotations

import logging
from typing import Any

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.webhooks import WebhookASGIApp, WebhookEvent, WebhookReceiver


def create_app() -> Any:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    client = SafeSnapTradeClient.from_env()

    def handler(event: WebhookEvent) -> None:
        client.mark_from_webhook(event)  # the handler's whole job: cheap, idempotent, no request

    return WebhookASGIApp(WebhookReceiver.from_settings(handler, client.settings))
