"""The service under test, run by uvicorn in a subprocess: ``uvicorn --factory webhook_service:create_app``.

Configured by environment: ``WEBHOOK_KEY`` (consumer key), ``WEBHOOK_DEDUPE_URL`` (claims shared
with other processes), ``WEBHOOK_RECORD`` (a file the handler appends one JSON line to per
processed event) and ``WEBHOOK_FRAMEWORK`` (``fastapi``: the receiver mounted at ``/snaptrade``
in a FastAPI app; anything else: the bare ASGI app). Events of users named ``fail-once-*`` make
the handler raise on their first delivery (across processes), to exercise redelivery; events of
users named ``hang-once-*`` make it hang on their first delivery (the test SIGKILLs that replica
while it holds the claim). ``WEBHOOK_CLOCK_FILE`` (optional) holds seconds added to the receiver's
clock, so a test moves time forward to SnapTrade's redelivery schedule; ``WEBHOOK_LEASE`` and
``WEBHOOK_TOLERANCE`` (optional) set the claim lease and the replay window.
"""

from __future__ import annotations

import json
import logging
import os
import time
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

    clock_file = os.environ.get("WEBHOOK_CLOCK_FILE")

    def now() -> float:
        offset = float(Path(clock_file).read_text() or 0) if clock_file else 0.0
        return time.time() + offset

    def handler(event: WebhookEvent) -> None:
        if (event.user_id or "").startswith("hang-once"):
            try:
                os.close(os.open(record.with_name(f"hung-{event.webhook_id}"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                time.sleep(3600)  # holds the claim until the test kills this process
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

    options: dict[str, Any] = {"now": now}
    if "WEBHOOK_LEASE" in os.environ:
        options["lease_seconds"] = float(os.environ["WEBHOOK_LEASE"])
    if "WEBHOOK_TOLERANCE" in os.environ:
        options["tolerance"] = float(os.environ["WEBHOOK_TOLERANCE"])
    receiver = WebhookReceiver(handler, consumer_key=key, dedupe=os.environ["WEBHOOK_DEDUPE_URL"], **options)
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
