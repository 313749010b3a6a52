"""The emulator's webhooks: signed deliveries of its events, SnapTrade's retries, faults and a journal.

Give the emulator a receiver URL (``SnapTradeEmulator(webhook_urls=(url,))`` or, once the receiver
is up, ``emu.webhooks.urls = [url]``) and every state change it makes is delivered the way
SnapTrade delivers it:

=======================================  ================================================
what happens in the emulator             events (API-key payload shape)
=======================================  ================================================
``registerSnapTradeUser``                ``USER_REGISTERED``
``deleteSnapTradeUser``                  ``USER_DELETED``
a portal connection completes            ``CONNECTION_ADDED``, then per account
                                         ``NEW_ACCOUNT_AVAILABLE``,
                                         ``ACCOUNT_TRANSACTIONS_INITIAL_UPDATE``,
                                         ``ACCOUNT_HOLDINGS_UPDATED``
a reconnect link completes               ``CONNECTION_FIXED``
a connection is disabled                 ``CONNECTION_BROKEN``
a connection is deleted                  ``ACCOUNT_REMOVED`` per account, ``CONNECTION_DELETED``
a connection is refreshed                per account ``ACCOUNT_HOLDINGS_UPDATED``,
                                         ``ACCOUNT_TRANSACTIONS_UPDATED``
an order is placed, replaced, cancelled  ``TRADE_UPDATE``
=======================================  ================================================

:meth:`WebhookEmitter.emit` sends any other event (``success: false`` holdings syncs, unknown
types). Each delivery is a POST of the payload's canonical JSON with SnapTrade's ``Signature``
header (HMAC-SHA256 with the consumer key of the user's client). Only 200, 201, 202 and 204 count
as delivered; anything else (or no answer within ``webhook_timeout``) is retried after each of
``webhook_retry_delays`` (SnapTrade: 30, 60 and 120 minutes; shrink them for tests), with the same
payload, ``webhookId`` and ``eventTimestamp``. With several URLs, attempts go round-robin, as
through a load balancer. Every attempt is a :class:`~aims_snaptrade.testing.journal.JournalEntry`
with ``operation="webhook"``.

Faults hit chosen attempts (``emu.webhooks.faults.add(WebhookFault.drop(), event_type=...)``):
``drop`` (never sent: undelivered, so retried), ``delay(s)``, ``duplicate`` (sent to this URL and to
the next one at once, as a load balancer that duplicates), ``corrupt("body")`` or
``corrupt("signature")`` (one byte changed).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from aims_snaptrade.testing.config import EmulatorConfig
from aims_snaptrade.testing.journal import Journal, JournalEntry
from aims_snaptrade.webhooks.verify import SIGNATURE_HEADER, canonical_json, sign_webhook

__all__ = ["WebhookEmitter", "WebhookFault", "WebhookFaultKind", "WebhookFaultRule", "WebhookFaults"]

DELIVERED = frozenset({200, 201, 202, 204})
"""The statuses SnapTrade counts as delivered."""


class WebhookFaultKind(enum.StrEnum):
    """What a webhook fault does to one delivery attempt."""

    DROP = "drop"
    DELAY = "delay"
    DUPLICATE = "duplicate"
    CORRUPT = "corrupt"


@dataclass(frozen=True, slots=True)
class WebhookFault:
    """One thing to go wrong with a delivery attempt; build it with the class methods."""

    kind: WebhookFaultKind
    seconds: float = 0.0
    part: Literal["body", "signature"] = "body"

    @property
    def name(self) -> str:
        """The label recorded in the journal."""
        return f"corrupt_{self.part}" if self.kind is WebhookFaultKind.CORRUPT else self.kind.value

    @classmethod
    def drop(cls) -> WebhookFault:
        """The attempt never reaches the receiver (counted as undelivered, so it is retried)."""
        return cls(WebhookFaultKind.DROP)

    @classmethod
    def delay(cls, seconds: float) -> WebhookFault:
        """The attempt is sent ``seconds`` late."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        return cls(WebhookFaultKind.DELAY, seconds=seconds)

    @classmethod
    def duplicate(cls) -> WebhookFault:
        """The attempt is sent twice at once: to its URL and to the next configured one."""
        return cls(WebhookFaultKind.DUPLICATE)

    @classmethod
    def corrupt(cls, part: Literal["body", "signature"] = "body") -> WebhookFault:
        """One byte of the body (or of the signature) is changed in transit."""
        if part not in ("body", "signature"):
            raise ValueError("part must be 'body' or 'signature'")
        return cls(WebhookFaultKind.CORRUPT, part=part)


@dataclass(eq=False)
class WebhookFaultRule:
    """A fault and the attempts it hits (see :meth:`WebhookFaults.add`)."""

    fault: WebhookFault
    event_type: str | None = None
    skip: int = 0
    times: int | None = 1
    matched: int = 0
    fired: int = 0


class WebhookFaults:
    """The webhook fault rules of one emulator (``emu.webhooks.faults``). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[WebhookFaultRule] = []

    def add(
        self,
        fault: WebhookFault,
        *,
        event_type: str | None = None,
        nth: int | None = None,
        skip: int = 0,
        times: int | None = 1,
    ) -> WebhookFaultRule:
        """Apply ``fault`` to delivery attempts (of ``event_type``, or any), as ``FaultInjector.add`` does.

        ``nth=N`` fires on the N-th matching attempt; ``times=None`` on every one after ``skip``.
        """
        if nth is not None:
            if nth < 1:
                raise ValueError("nth is 1-based")
            skip = nth - 1
        if skip < 0 or (times is not None and times < 1):
            raise ValueError("skip must be >= 0 and times >= 1 (or None)")
        rule = WebhookFaultRule(fault, event_type, skip, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Withdraw every rule."""
        with self._lock:
            self._rules.clear()

    def select(self, event_type: str) -> WebhookFault | None:
        """Count one attempt against the matching rules; the fault due, if any (earliest rule wins)."""
        chosen: WebhookFault | None = None
        with self._lock:
            for rule in self._rules:
                if rule.event_type not in (None, event_type):
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                rule.matched += 1
                if chosen is None and rule.matched > rule.skip:
                    rule.fired += 1
                    chosen = rule.fault
        return chosen


def _flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


class WebhookEmitter:
    """Signs and delivers the emulator's webhooks (``emu.webhooks``); see the module documentation.

    Attributes:
        urls: Receiver URLs; empty means events are recorded in :attr:`sent` but not delivered.
        retry_delays: Seconds before each redelivery of an undelivered webhook.
        timeout: Seconds an attempt may take before it counts as undelivered.
        faults: Fault rules for delivery attempts.
        sent: Every payload emitted, in order (delivered or not).
    """

    def __init__(self, config: EmulatorConfig, journal: Journal) -> None:
        self._config = config
        self._journal = journal
        self.urls: list[str] = list(config.webhook_urls)
        self.retry_delays: tuple[float, ...] = tuple(config.webhook_retry_delays)
        self.timeout = config.webhook_timeout
        self.faults = WebhookFaults()
        self.sent: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._round_robin = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[Future[None]] = set()
        self._backlog: list[tuple[str, dict[str, Any]]] = []

    # --- lifecycle (called by the emulator on its event loop) -------------------------------------

    async def start(self) -> None:
        """Open the HTTP client and send what was emitted before the emulator started."""
        self._session = aiohttp.ClientSession()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            backlog, self._backlog = self._backlog, []
        for consumer_key, payload in backlog:
            self._schedule(consumer_key, payload)

    async def stop(self) -> None:
        """Abandon deliveries still waiting and close the HTTP client."""
        with self._lock:
            self._loop = None
            pending = list(self._pending)
        for future in pending:
            future.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- emitting -------------------------------------------------------------------------------------

    def emit(self, client_id: str, event_type: str, user_id: str | None, **fields: Any) -> dict[str, Any]:
        """Build, sign and deliver one event for a user of ``client_id``; returns the payload.

        ``fields`` use SnapTrade's names (``accountId``, ``brokerageAuthorizationId``,
        ``details={"success": False}``...). ``None`` values are left out.
        """
        client = next((c for c in self._config.clients if c.client_id == client_id), None)
        if client is None:
            raise ValueError(f"unknown client id {client_id!r}")
        payload: dict[str, Any] = {
            "webhookId": str(uuid.uuid4()),
            "clientId": client_id,
            "eventTimestamp": datetime.now(UTC).isoformat(),
            "userId": user_id,
            "eventType": event_type,
            **{k: v for k, v in fields.items() if v is not None},
        }
        with self._lock:
            self.sent.append(payload)
            if self._loop is None:
                self._backlog.append((client.consumer_key, payload))
                return payload
        self._schedule(client.consumer_key, payload)
        return payload

    def _schedule(self, consumer_key: str, payload: dict[str, Any]) -> None:
        with self._lock:
            loop = self._loop
            if loop is None:
                self._backlog.append((consumer_key, payload))
                return
            future = asyncio.run_coroutine_threadsafe(self._deliver(consumer_key, payload), loop)
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every delivery (retries included) has finished; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending and (not self._backlog or self._loop is None):
                    return True
            time.sleep(0.01)
        return False

    def reset(self) -> None:
        """Forget faults and sent payloads (deliveries in flight continue)."""
        self.faults.clear()
        with self._lock:
            self.sent.clear()

    # --- delivering -----------------------------------------------------------------------------------

    async def _deliver(self, consumer_key: str, payload: Mapping[str, Any]) -> None:
        body = canonical_json(payload).encode()
        signature = sign_webhook(payload, consumer_key)
        for attempt in range(1, len(self.retry_delays) + 2):
            if await self._attempt(payload, body, signature, attempt):
                return
            if attempt <= len(self.retry_delays):
                await asyncio.sleep(self.retry_delays[attempt - 1])

    async def _attempt(self, payload: Mapping[str, Any], body: bytes, signature: str, attempt: int) -> bool:
        urls = list(self.urls)
        if not urls:
            return True  # nowhere to deliver: recorded in ``sent`` only
        url = urls[next(self._round_robin) % len(urls)]
        fault = self.faults.select(str(payload["eventType"]))
        if fault is not None and fault.kind is WebhookFaultKind.DROP:
            self._record(payload, url, attempt, None, 0.0, fault)
            return False
        if fault is not None and fault.kind is WebhookFaultKind.DELAY:
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind is WebhookFaultKind.CORRUPT:
            if fault.part == "body":
                body = _flip_one_byte(body)
            else:
                signature = _flip_one_byte(signature.encode()).decode("latin-1")
        targets = [url]
        if fault is not None and fault.kind is WebhookFaultKind.DUPLICATE:
            targets.append(urls[(urls.index(url) + 1) % len(urls)])
        statuses = await asyncio.gather(*(self._post(payload, t, body, signature, attempt, fault) for t in targets))
        return any(status in DELIVERED for status in statuses)

    async def _post(
        self,
        payload: Mapping[str, Any],
        url: str,
        body: bytes,
        signature: str,
        attempt: int,
        fault: WebhookFault | None,
    ) -> int | None:
        assert self._session is not None
        started = time.monotonic()
        status: int | None = None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with self._session.post(url, data=body, headers=headers, timeout=timeout) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        self._record(payload, url, attempt, status, time.monotonic() - started, fault)
        return status

    def _record(
        self,
        payload: Mapping[str, Any],
        url: str,
        attempt: int,
        status: int | None,
        duration: float,
        fault: WebhookFault | None,
    ) -> None:
        self._journal.append(
            JournalEntry(
                request_id=f"webhook-{uuid.uuid4()}",
                time=time.time(),
                duration=duration,
                method="POST",
                path=urlsplit(url).path or "/",
                operation="webhook",
                status=status,
                code=None,
                client_id=payload.get("clientId"),
                user_id=payload.get("userId"),
                account_id=payload.get("accountId"),
                fault=fault.name if fault is not None else None,
                processed=status in DELIVERED,
                webhook_id=str(payload["webhookId"]),
                event_type=str(payload["eventType"]),
                attempt=attempt,
                url=url,
            )
        )
