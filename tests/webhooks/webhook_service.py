"""The service under test, run by uvicorn in a subprocess: ``uvicorn --factory webhook_service:create_app``.

Configured by environment: ``WEBHOOK_KEY`` (consumer key), ``WEBHOOK_DEDUPE_URL`` (claims shared
with other processes), ``WEBHOOK_RECORD`` (a file the handler appends one JSON line to per
processed event) and ``WEBHOOK_FRAMEWORK`` (``fastapi``: the receiver mounted at ``/snaptrade``
in a FastAPI app; anything else: the bare ASGI app). Events of users named ``fail-once-*`` make
the handler raise on their first delivery (across processes), to exercise redelivery.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aims_snaptrade.webhooks import WebhookASGIApp, WebhookEvent, WebhookReceiver

logger = logging.getLogger("aims_snaptrade.webhooks.test_service")


def create_app() -> Any:
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s")
    record = Path(os.environ["WEBHOOK_RECORD"])
    key = os.environ["WEBHOOK_KEY"]

    def handler(event: WebhookEvent) -> None:
        if (event.user_id or "").startswith("fail-once"):
            try:
                os.close(os.open(record.with_name(f"failed-{event.webhook_id}"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                raise RuntimeError(f"first delivery of {event.webhook_id} fails (key {key})")
        line = json.dumps(
            {
                "pid": os.getpid(),
                "webhookId": event.webhook_id,
                "type": type(event).__name__,
                "eventType": event.event_type,
                "success": getattr(event, "success", None),
            }
        )
        fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        logger.info("processed %s", event.webhook_id)

    receiver = WebhookReceiver(handler, consumer_key=key, dedupe=os.environ["WEBHOOK_DEDUPE_URL"], tolerance=600)
    asgi = WebhookASGIApp(receiver)
    if os.environ.get("WEBHOOK_FRAMEWORK") != "fastapi":
        return asgi
    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        receiver.close()

    app = FastAPI(lifespan=lifespan)
    app.mount("/snaptrade", asgi)
    return app
