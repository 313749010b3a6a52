"""The reference AIMS service: how a FastAPI service integrates aims-snaptrade.

Run it (``pip install 'aims-snaptrade[service]'``, then from this directory)::

    uvicorn app:app --port 8000            # as many replicas as you like, behind a load balancer
    celery -A worker worker                # the workers that sync portfolios
    celery -A worker beat                  # exactly one: sync_due every SNAPTRADE_SYNC_DUE_INTERVAL s

Everything is configured from the environment (``SNAPTRADE_*``, see docs/integration.md): the
stores in PostgreSQL, the rate-limit budgets and the Celery broker in Redis, shared by every
replica and worker. What it shows, one endpoint each:

* onboarding: the SnapTrade user, the person's consent, and the Connection Portal link;
* the portal's return: the result read with :class:`~aims_snaptrade.PortalResult`, confirmed;
* accounts and positions, with a reconnect link for a disabled connection;
* webhooks: the receiver mounted at import, bound in the lifespan to the client that the
  handler needs; each verified delivery (processed once across replicas by the dedupe store)
  marks the sync ledger, and the Celery workers (``worker.py``) sync what is marked;
* trading: preview (shown to the person), confirm and place once; a lost answer is reported as
  unknown and settled by reconciliation, never by sending again;
* ``/livez`` and ``/readyz`` for the orchestrator's probes;
* erasure of a person's data, at SnapTrade and in every store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from aims_snaptrade import (
    AsyncSafeSnapTradeClient,
    HealthMonitor,
    OrderPreview,
    PortalResult,
    SnapTradeConfirmationError,
    SnapTradeConnectionDisabledError,
    SnapTradeError,
    SnapTradeGuardrailError,
    SnapTradeNotFoundError,
    SnapTradeRateLimitError,
    SnapTradeStoreError,
    SnapTradeUnknownOutcomeError,
    SnapTradeValidationError,
)
from aims_snaptrade.webhooks import WebhookASGIApp, WebhookEvent

log = logging.getLogger("aims_service")

# Where the Connection Portal sends the person back to (this service's public address).
PUBLIC_URL = os.environ.get("AIMS_SERVICE_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
DISCLOSURE_VERSION = os.environ.get("AIMS_SERVICE_DISCLOSURE_VERSION", "2026-01")

# Mounted now, at import; bound to a receiver in the lifespan, once the client exists. Until then
# deliveries are answered 503 and SnapTrade redelivers them.
webhooks = WebhookASGIApp()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    logging.basicConfig(level=os.environ.get("AIMS_SERVICE_LOG_LEVEL", "INFO"))
    async with AsyncSafeSnapTradeClient.from_env() as client:
        app.state.client = client
        app.state.monitor = HealthMonitor(client)
        receiver = webhooks.bind(client.webhook_receiver(on_event))
        try:
            yield
        finally:
            webhooks.unbind()
            receiver.close()
            app.state.monitor.close()


app = FastAPI(title="AIMS reference service", lifespan=lifespan)
app.mount("/webhooks/snaptrade", webhooks)


def client_of(request: Request) -> AsyncSafeSnapTradeClient:
    client: AsyncSafeSnapTradeClient = request.app.state.client
    return client


# --- webhooks: mark the ledger, queue the sync ---------------------------------------------------


async def on_event(event: WebhookEvent) -> None:
    """Called once per verified ``webhookId`` across every replica (the dedupe store's claim).

    It only marks the sync ledger: cheap, idempotent, no SnapTrade request. The workers' beat
    schedule (``sync_due``) syncs every marked user once its marks have settled, so a burst of
    webhooks for one person becomes one sync. Raising answers 500 and releases the claim:
    SnapTrade redelivers, and the redelivery marks again.
    """
    client: AsyncSafeSnapTradeClient = app.state.client
    marks = await client.mark_from_webhook(event)
    log.info("webhook processed %s %s marks=%d", event.webhook_id, event.event_type, len(marks))


# --- errors: one place turns the library's typed errors into answers -----------------------------

_STATUS: tuple[tuple[type[SnapTradeError], int], ...] = (
    (SnapTradeUnknownOutcomeError, 202),
    (SnapTradeValidationError, 422),
    (SnapTradeConfirmationError, 409),
    (SnapTradeGuardrailError, 403),  # consent, rollout, trading off, order limits: nothing was sent
    (SnapTradeNotFoundError, 404),
    (SnapTradeConnectionDisabledError, 409),
    (SnapTradeRateLimitError, 429),
    (SnapTradeStoreError, 503),
)


@app.exception_handler(SnapTradeError)
async def snaptrade_error(request: Request, exc: SnapTradeError) -> JSONResponse:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 502)
    # str(exc) is redacted by the library: no key, secret or signature, whatever failed.
    body = {"error": type(exc).__name__, "message": exc.message, "request_id": exc.request_id}
    return JSONResponse(body, status_code=status)


# --- onboarding ----------------------------------------------------------------------------------


class Onboarding(BaseModel):
    scopes: list[Literal["read", "trade"]] = Field(default=["read"], min_length=1)
    """What the person agreed to, as shown to them (``DISCLOSURE_VERSION``)."""


@app.post("/users/{user_id}/onboard")
async def onboard(user_id: str, body: Onboarding, request: Request) -> dict[str, Any]:
    client = client_of(request)
    await client.ensure_user(user_id)  # registers once; the secret goes to the secret store
    if client.consent_store is not None:  # unless SNAPTRADE_CONSENT_REQUIRED=false (sandbox only)
        for scope in body.scopes:
            await client.grant_consent(user_id, scope, disclosure_version=DISCLOSURE_VERSION, source="onboarding")
    back = f"{PUBLIC_URL}/portal/return?{urlencode({'user_id': user_id})}"
    link = await client.connection_portal_url(
        user_id,
        connection_type="trade" if "trade" in body.scopes else "read",
        custom_redirect=back,
        immediate_redirect=True,
    )
    return {"user_id": user_id, "portal_url": link.redirect_uri, "expires_at": link.expires_at.isoformat()}


@app.get("/portal/return")
async def portal_return(user_id: str, request: Request) -> dict[str, Any]:
    """Where the portal sends the person back: the result, and whether SnapTrade confirms it.

    The query is whatever the browser brought, so it proves nothing by itself: a success is
    confirmed against the user's accounts (the ``CONNECTION_ADDED`` webhook confirms it too).
    """
    result = PortalResult.from_redirect(dict(request.query_params))
    confirmed = False
    if result.succeeded:
        accounts = await client_of(request).list_accounts(user_id)
        confirmed = any(account.connection_id == result.connection_id for account in accounts)
    return {**result.model_dump(mode="json"), "confirmed": confirmed}


# --- accounts and positions ----------------------------------------------------------------------


@app.get("/users/{user_id}/accounts")
async def accounts(user_id: str, request: Request) -> list[dict[str, Any]]:
    client = client_of(request)
    found = []
    for account in await client.list_accounts(user_id):
        entry = account.model_dump(mode="json")  # typed fields only, money as decimal strings
        try:
            positions = await client.get_positions(user_id, account.id)
            entry["positions"] = [position.model_dump(mode="json") for position in positions]
        except SnapTradeConnectionDisabledError as exc:
            # The person repairs the connection in the portal (same connection, same accounts).
            link = await client.connection_portal_url(user_id, reconnect=exc.authorization_id)
            entry["positions"] = None
            entry["reconnect_url"] = link.redirect_uri
        found.append(entry)
    return found


# --- trading: preview, confirm, place ------------------------------------------------------------


class OrderTerms(BaseModel):
    action: Literal["BUY", "SELL"]
    symbol: str
    units: Decimal = Field(gt=0)


class Placement(BaseModel):
    preview: dict[str, Any]
    """The preview as ``/orders/preview`` answered it, shown to the person."""
    confirmation: str
    """The preview's token, sent back when the person confirms."""


@app.post("/users/{user_id}/accounts/{account_id}/orders/preview")
async def preview_order(user_id: str, account_id: str, terms: OrderTerms, request: Request) -> dict[str, Any]:
    preview = await client_of(request).preview_order(
        user_id, account_id, action=terms.action, symbol=terms.symbol, units=terms.units
    )
    return preview.model_dump(mode="json")  # cost, fees, buying power after, and the token


@app.post("/orders")
async def place_order(body: Placement, request: Request) -> JSONResponse:
    preview = OrderPreview.model_validate(body.preview)
    try:
        order = await client_of(request).place_order(preview, confirmation=body.confirmation)
    except SnapTradeUnknownOutcomeError:
        # Sent, answer lost: the order may exist. Never send again; settle it by reconciliation.
        unknown = {"status": "unknown", "client_order_id": preview.client_order_id}
        return JSONResponse(unknown, status_code=202)
    return JSONResponse({"status": "placed", "order": order.model_dump(mode="json")}, status_code=201)


@app.post("/orders/{client_order_id}/reconcile")
async def reconcile(client_order_id: str, request: Request) -> dict[str, Any]:
    settled = await client_of(request).reconcile_order(client_order_id)
    return {
        "outcome": settled.outcome,
        "order": settled.order.model_dump(mode="json") if settled.order else None,
        "retry_at": settled.retry_at.isoformat() if settled.retry_at else None,
        "reason": settled.reason,
    }


# --- probes --------------------------------------------------------------------------------------


@app.get("/livez")
async def livez(request: Request) -> JSONResponse:
    live = request.app.state.monitor.live()
    return JSONResponse({"live": live}, status_code=200 if live else 503)


@app.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    report = await request.app.state.monitor.acheck()
    failed = {check.name: check.detail for check in report.checks if not check.ok}
    return JSONResponse({"ready": report.ready, "failed": failed}, status_code=200 if report.ready else 503)


# --- data rights ---------------------------------------------------------------------------------


@app.delete("/users/{user_id}")
async def erase(user_id: str, request: Request) -> dict[str, Any]:
    receipt = await client_of(request).erase_user(user_id, confirm=True)
    return receipt.to_json()
