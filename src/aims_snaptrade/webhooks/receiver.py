"""The receiver: verify, audit, claim, call the handler, answer; written once for sync and async.

:meth:`WebhookReceiver._flow` is a generator that decides everything and yields effects
(:class:`~aims_snaptrade.pipeline.StoreCall` on the ``"webhook_dedupe"`` store, :class:`Audit`,
:class:`Handle`); :meth:`WebhookReceiver.handle` performs them with blocking calls (WSGI, plain
functions) and :meth:`WebhookReceiver.ahandle` awaits them (ASGI), running blocking stores and
synchronous handlers in worker threads so the event loop never blocks.

What SnapTrade is answered, and why:

=====================  ======  ==============================================================
outcome                status  meaning
=====================  ======  ==============================================================
``processed``          200     verified, claimed, the handler returned
``duplicate``          200     this ``webhookId`` was processed before: not processed again
``in_progress``        409     another replica holds the claim right now; SnapTrade redelivers
                               later and then gets ``duplicate`` (or processes it, if that
                               replica failed): answering 2xx here could lose the event
``rejected``           401     bad or missing signature, or an event outside the replay window
                               (older than ``tolerance``, 6 h by default: SnapTrade's whole
                               retry schedule with margin)
``rejected``           400     not a webhook payload
``failed``             500     the handler raised: the claim is released, so the redelivery
                               SnapTrade sends is processed, once
``unavailable``        503     the audit hook or the dedupe store failed: nothing was processed
=====================  ======  ==============================================================
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aims_snaptrade._ids import keyed_ids
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeWebhookError
from aims_snaptrade.pipeline import StoreCall
from aims_snaptrade.redaction import install_log_redaction, redact, scrub_exception
from aims_snaptrade.settings import Settings
from aims_snaptrade.webhooks.dedupe.factory import open_webhook_dedupe_store
from aims_snaptrade.webhooks.dedupe.memory import MemoryWebhookDedupeStore
from aims_snaptrade.webhooks.dedupe.protocol import WebhookDedupeStore
from aims_snaptrade.webhooks.events import WebhookEvent
from aims_snaptrade.webhooks.verify import (
    DEFAULT_TOLERANCE_SECONDS,
    MAX_AHEAD_SECONDS,
    Headers,
    signing_keys,
    verify_webhook,
)

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_RETENTION_SECONDS",
    "Audit",
    "Handle",
    "WebhookHandler",
    "WebhookOutcome",
    "WebhookReceiver",
    "WebhookResponse",
]

logger = logging.getLogger("aims_snaptrade.webhooks")

DEDUPE_STORE = "webhook_dedupe"
DEFAULT_LEASE_SECONDS = 300.0
"""How long a claim protects a delivery being processed; make it longer than your slowest handler."""
DEFAULT_RETENTION_SECONDS = 30 * 24 * 3600.0
"""How long a processed ``webhookId`` is remembered: far longer than the replay window, so that every
replay the window accepts is answered ``duplicate`` and never processed again."""

WebhookOutcome = Literal["processed", "duplicate", "in_progress", "rejected", "failed", "unavailable"]
WebhookHandler = Callable[[WebhookEvent], Any] | Callable[[WebhookEvent], Awaitable[Any]]
"""The service's handler: a function or coroutine function taking the typed event."""


@dataclass(frozen=True, slots=True)
class Handle:
    """Effect: call the service's handler with the verified, claimed event."""

    event: WebhookEvent


@dataclass(frozen=True, slots=True)
class Audit:
    """Effect: call the ``on_verified`` hook (the audit trail) with a verified event."""

    event: WebhookEvent


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """What to answer SnapTrade.

    Attributes:
        status: HTTP status.
        outcome: What happened (see the module documentation).
        body: A small JSON body naming the outcome (never a key or signature).
        event: The verified event, when verification passed.
        headers: Response headers (``Content-Type``, ``Retry-After`` for ``in_progress``).
    """

    status: int
    outcome: WebhookOutcome
    body: bytes = field(repr=False)
    event: WebhookEvent | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


Effect = StoreCall | Handle | Audit


def _answer(
    status: int,
    outcome: WebhookOutcome,
    event: WebhookEvent | None = None,
    retry_after: int | None = None,
    **extra: Any,
) -> WebhookResponse:
    content: dict[str, Any] = {"status": outcome}
    if event is not None:
        content["webhookId"] = event.webhook_id
    content.update(extra)
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    if retry_after is not None:
        headers += (("retry-after", str(retry_after)),)
    body = redact(json.dumps(content, separators=(",", ":"))).encode()
    return WebhookResponse(status, outcome, body, event, headers)


class WebhookReceiver:
    """Verifies, de-duplicates and hands SnapTrade webhooks to ``handler``.

    Args:
        handler: Called once per ``webhookId`` with the typed event; a function or a coroutine
            function. Raising makes the receiver answer 500 and release the claim.
        consumer_key: The key deliveries are signed with. Registered for redaction.
        previous_consumer_keys: Keys also accepted during a consumer-key rotation (the overlap of
            ``docs/operations.md``); empty outside one.
        dedupe: A :class:`WebhookDedupeStore`, a store URL (the receiver then owns and closes
            it), or ``None`` for an in-process memory store (one replica only).
        tolerance: Replay window on ``eventTimestamp``, seconds (default 6 h, SnapTrade's whole retry
            schedule with margin; see :data:`~aims_snaptrade.webhooks.verify.DEFAULT_TOLERANCE_SECONDS`).
        lease_seconds: How long a claim protects an unfinished delivery (see
            :data:`DEFAULT_LEASE_SECONDS`).
        retention_seconds: How long processed ids are remembered; at least the span during which
            the window accepts a payload (``tolerance`` plus the clock skew allowed ahead), else a
            replay inside the window would be processed again.
        on_verified: Called with every verified event before de-duplication (duplicates
            included), for the audit trail; a function or coroutine function. If it raises, the
            delivery is answered 503 and not processed.
        now: Clock for the replay window (Unix seconds).
        id_key: The secret claim keys are hashed under (:attr:`claim_key`); every replica must use
            the same. ``from_settings`` passes ``SNAPTRADE_AUDIT_KEY`` when set (never rotated, so
            claims survive a consumer-key rotation); ``None``: the consumer key.

    Raises:
        SnapTradeConfigurationError: a bad key, a non-positive duration, or ``retention_seconds``
            shorter than the window.
    """

    def __init__(
        self,
        handler: WebhookHandler,
        *,
        consumer_key: str,
        previous_consumer_keys: Sequence[str] = (),
        dedupe: WebhookDedupeStore | str | None = None,
        tolerance: float = DEFAULT_TOLERANCE_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        on_verified: Callable[[WebhookEvent], Any] | None = None,
        now: Callable[[], float] = time.time,
        id_key: str | None = None,
    ) -> None:
        if not callable(handler):
            raise SnapTradeConfigurationError("WebhookReceiver needs a callable handler(event).")
        if on_verified is not None and not callable(on_verified):
            raise SnapTradeConfigurationError("on_verified must be a callable taking the event.")
        keys = signing_keys(consumer_key, previous_consumer_keys, where="WebhookReceiver")
        for name, value in (
            ("tolerance", tolerance),
            ("lease_seconds", lease_seconds),
            ("retention_seconds", retention_seconds),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise SnapTradeConfigurationError(f"{name} must be positive seconds, got {value!r}.")
        accepted_span = float(tolerance) + min(float(tolerance), MAX_AHEAD_SECONDS)
        if retention_seconds < accepted_span:
            # A processed id forgotten while its payload still verifies would be processed again.
            raise SnapTradeConfigurationError(
                f"retention_seconds ({retention_seconds:g}) is shorter than the span the replay window accepts a "
                f"payload ({accepted_span:g} s: tolerance plus the clock skew allowed ahead): a replay would be "
                "processed twice. Raise retention_seconds or lower tolerance."
            )
        install_log_redaction()
        self._handler = handler
        self._consumer_key = keys[0]
        self._previous_keys = keys[1:]
        # Claims may sit in shared infrastructure (Redis, a PostgreSQL table): they are keyed by a
        # keyed hash of the webhook id, the same on every replica holding the same id key (the
        # audit key, never rotated, from from_settings; else the consumer key).
        if id_key is not None and (not isinstance(id_key, str) or not id_key):
            raise SnapTradeConfigurationError("id_key must be a non-empty string (the audit key) or None.")
        self.claim_key = keyed_ids(id_key or keys[0], "webhook claim ids")
        """The key a webhook id is claimed under in the dedupe store (``"h-"`` and 32 hex digits)."""
        self._on_verified = on_verified
        self.tolerance = float(tolerance)
        self.lease_seconds = float(lease_seconds)
        self.retention_seconds = float(retention_seconds)
        self._now = now
        self._closers: list[Callable[[], None]] = []
        self._owns_store = dedupe is None or isinstance(dedupe, str)
        if dedupe is None:
            dedupe = MemoryWebhookDedupeStore()
        elif isinstance(dedupe, str):
            dedupe = open_webhook_dedupe_store(dedupe)
        self.dedupe: WebhookDedupeStore = dedupe

    @classmethod
    def from_settings(
        cls, handler: WebhookHandler, settings: Settings | None = None, **options: Any
    ) -> WebhookReceiver:
        """A receiver with the consumer key (and ``SNAPTRADE_PREVIOUS_CONSUMER_KEY`` during a rotation),
        ``SNAPTRADE_WEBHOOK_DEDUPE_URL`` and ``SNAPTRADE_WEBHOOK_TOLERANCE`` of ``settings`` (read from
        the environment when omitted); ``options`` override the rest.

        When ``SNAPTRADE_AUDIT_KEY`` is set, every verified webhook is recorded in the audit trail
        (``SNAPTRADE_AUDIT_STORE_URL``, opened and closed by the receiver) exactly as
        ``on_verified=audit_webhooks(trail)`` does; an explicit ``on_verified`` replaces it.

        Raises:
            SnapTradeConfigurationError: An option the constructor does not take, or, in production,
                a ``memory://`` dedupe store.
        """
        unknown = sorted(set(options) - _RECEIVER_OPTIONS)
        if unknown:
            raise SnapTradeConfigurationError(
                f"unknown WebhookReceiver option(s) {', '.join(map(repr, unknown))}: use "
                + ", ".join(sorted(_RECEIVER_OPTIONS))
                + "."
            )
        settings = settings or Settings.from_env()
        if "dedupe" not in options:
            from aims_snaptrade.data_dir import prepare_store_locations

            prepare_store_locations(settings, ["webhook_dedupe_url"])
            options["dedupe"] = settings.webhook_dedupe_url
        options.setdefault("tolerance", settings.webhook_tolerance)
        if settings.previous_consumer_key is not None:
            options.setdefault("previous_consumer_keys", (settings.previous_consumer_key.get_secret_value(),))
        if settings.audit_key is not None:
            options.setdefault("id_key", settings.audit_key.get_secret_value())
        trail = None
        if "on_verified" not in options and settings.audit_key is not None:
            from aims_snaptrade.compliance.audit import audit_webhooks
            from aims_snaptrade.compliance.factory import audit_store_url, open_audit_trail

            trail = open_audit_trail(audit_store_url(settings), settings)
            options["on_verified"] = audit_webhooks(trail)
        try:
            receiver = cls(handler, consumer_key=settings.consumer_key.get_secret_value(), **options)
        except BaseException:
            if trail is not None:
                trail.close()
            raise
        if trail is not None:
            receiver._closers.append(trail.close)
        if settings.environment == "production" and receiver.dedupe.kind == "memory":
            receiver.close()
            # Claims that die with the process let every restart and every replica process again.
            raise SnapTradeConfigurationError(
                "production refuses the memory webhook dedupe store: set SNAPTRADE_WEBHOOK_DEDUPE_URL to "
                "redis://..., postgresql://... (replicas) or sqlite:///path (one host)."
            )
        return receiver

    def __repr__(self) -> str:
        return f"WebhookReceiver(dedupe={self.dedupe!r}, tolerance={self.tolerance:g})"

    def close(self) -> None:
        """Close the dedupe store and the audit trail if the receiver opened them. Idempotent."""
        if self._owns_store:
            self.dedupe.close()
        closers, self._closers = self._closers, []
        for close in closers:
            close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the decisions, once ---------------------------------------------------------------------

    def _flow(self, headers: Headers, body: bytes | str) -> Generator[Effect, Any, WebhookResponse]:
        try:
            event = verify_webhook(
                headers,
                body,
                consumer_key=self._consumer_key,
                previous_consumer_keys=self._previous_keys,
                tolerance=self.tolerance,
                now=self._now,
            )
        except SnapTradeWebhookError as exc:
            logger.warning("Refused a webhook delivery (%s): %s", type(exc).__name__, exc.message)
            return _answer(exc.http_status, "rejected", error=type(exc).__name__, message=exc.message)
        if self._on_verified is not None:
            try:
                yield Audit(event)
            except Exception as exc:
                logger.error("The on_verified hook failed for webhook %s: %s", event.webhook_id, scrub_exception(exc))
                return _answer(503, "unavailable", event, retry_after=60)
        token = uuid.uuid4().hex
        claim_key = self.claim_key(event.webhook_id)
        try:
            claim = yield StoreCall("claim", (claim_key, token, self.lease_seconds), store=DEDUPE_STORE)
        except Exception as exc:  # the protocol says SnapTradeWebhookDedupeStoreError; custom stores may not
            logger.error("Cannot claim webhook %s: %s", event.webhook_id, scrub_exception(exc))
            return _answer(503, "unavailable", event, retry_after=60)
        if claim == "processed":
            logger.info("Webhook %s (%s) was processed before; not again.", event.webhook_id, event.event_type)
            return _answer(200, "duplicate", event)
        if claim == "in_progress":
            logger.info("Webhook %s is being processed by another holder.", event.webhook_id)
            return _answer(409, "in_progress", event, retry_after=int(self.lease_seconds))
        try:
            yield Handle(event)
        except Exception as exc:
            kind = event.event_type
            logger.error("The handler failed on webhook %s (%s): %s", event.webhook_id, kind, scrub_exception(exc))
            try:
                yield StoreCall("release", (claim_key, token), store=DEDUPE_STORE)
            except Exception as store_exc:
                # The claim then expires after lease_seconds; the redelivery after that is processed.
                logger.error("Cannot release webhook %s: %s", event.webhook_id, scrub_exception(store_exc))
            return _answer(500, "failed", event)
        try:
            kept = yield StoreCall("complete", (claim_key, token, self.retention_seconds), store=DEDUPE_STORE)
        except Exception as exc:
            kept = False
            logger.error("Cannot record webhook %s as processed: %s", event.webhook_id, scrub_exception(exc))
        if not kept:
            # Processed, but another holder may process it again (the lease ran out): still a 200,
            # a 5xx would make SnapTrade redeliver and process it once more for certain.
            logger.warning("Webhook %s was processed after its claim lapsed; raise lease_seconds.", event.webhook_id)
        return _answer(200, "processed", event)

    # --- the two drivers ---------------------------------------------------------------------------

    def handle(self, headers: Headers, body: bytes | str) -> WebhookResponse:
        """Process one delivery with blocking calls (WSGI apps, plain functions, job workers).

        An async handler or hook is run to completion with :func:`asyncio.run`.
        """
        flow = self._flow(headers, body)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                response: WebhookResponse = stop.value
                return response
            value, error = None, None
            try:
                value = self._perform(effect)
            except Exception as exc:
                error = exc

    def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, StoreCall):
            return getattr(self.dedupe, effect.method)(*effect.args)
        call = self._handler if isinstance(effect, Handle) else self._on_verified
        assert call is not None
        result = call(effect.event)
        if inspect.isawaitable(result):
            return asyncio.run(_awaited(result))
        return result

    async def ahandle(self, headers: Headers, body: bytes | str) -> WebhookResponse:
        """Process one delivery on an event loop (ASGI); blocking work runs in worker threads."""
        flow = self._flow(headers, body)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                response: WebhookResponse = stop.value
                return response
            value, error = None, None
            try:
                value = await self._aperform(effect)
            except Exception as exc:
                error = exc

    async def _aperform(self, effect: Effect) -> Any:
        if isinstance(effect, StoreCall):
            return await asyncio.to_thread(getattr(self.dedupe, effect.method), *effect.args)
        call = self._handler if isinstance(effect, Handle) else self._on_verified
        assert call is not None
        if inspect.iscoroutinefunction(call):
            return await call(effect.event)
        result = await asyncio.to_thread(call, effect.event)
        if inspect.isawaitable(result):
            return await result
        return result


_RECEIVER_OPTIONS = frozenset(
    name
    for name in inspect.signature(WebhookReceiver.__init__).parameters
    if name not in ("self", "handler", "consumer_key")
)


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result
