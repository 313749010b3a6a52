"""An ASGI application around a :class:`~aims_snaptrade.webhooks.receiver.WebhookReceiver`.

No framework needed: run it with any ASGI server (``uvicorn module:app``), or mount it in FastAPI
or Starlette (``app.mount("/webhooks/snaptrade", WebhookASGIApp(receiver))``). It answers POST
only (405 otherwise) and refuses bodies over ``max_body_bytes`` (413) without reading further.

A framework mounts apps when the module is imported, before the lifespan builds the client the
handler needs: create the app unbound (``WebhookASGIApp()``), mount it, and :meth:`~WebhookASGIApp.bind`
the receiver in the lifespan (``webhooks.bind(client.webhook_receiver(handler))``). Until then,
and after :meth:`~WebhookASGIApp.unbind`, deliveries are answered 503 with ``Retry-After``, which
SnapTrade redelivers: nothing is lost and nothing is processed half-configured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.webhooks.receiver import WebhookReceiver

__all__ = ["WebhookASGIApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_MAX_BODY_BYTES = 1 << 20
_JSON = [(b"content-type", b"application/json")]


class WebhookASGIApp:
    """The ASGI 3 callable. Standalone it also speaks the lifespan protocol and closes the receiver at shutdown.

    Args:
        receiver: Does the work; ``None`` to mount now and :meth:`bind` one later (503 until then).
        max_body_bytes: Largest body accepted (SnapTrade's are a few hundred bytes).
    """

    def __init__(self, receiver: WebhookReceiver | None = None, *, max_body_bytes: int = _MAX_BODY_BYTES) -> None:
        self.receiver: WebhookReceiver | None = receiver
        self.max_body_bytes = max_body_bytes

    def bind(self, receiver: WebhookReceiver) -> WebhookReceiver:
        """Start processing deliveries with ``receiver`` (in the application's lifespan); returns it."""
        if not isinstance(receiver, WebhookReceiver):
            raise SnapTradeConfigurationError(f"bind() needs a WebhookReceiver, got {type(receiver).__name__}.")
        self.receiver = receiver
        return receiver

    def unbind(self) -> WebhookReceiver | None:
        """Stop processing (503 again) and hand back the receiver for the caller to close."""
        receiver, self.receiver = self.receiver, None
        return receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b'{"status":"method_not_allowed"}', [(b"allow", b"POST")])
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _respond(send, 413, b'{"status":"rejected","error":"body too large"}')
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        receiver = self.receiver
        if receiver is None:  # mounted, not bound yet (or unbound at shutdown): SnapTrade redelivers
            await _respond(send, 503, b'{"status":"unavailable"}', [*_JSON, (b"retry-after", b"60")])
            return
        response = await receiver.ahandle(scope["headers"], b"".join(chunks))
        await _respond(send, response.status, response.body, [(k.encode(), v.encode()) for k, v in response.headers])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.receiver is not None:
                    self.receiver.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    extra = headers or _JSON
    await send({"type": "http.response.start", "status": status, "headers": extra})
    await send({"type": "http.response.body", "body": body})
