"""An ASGI application around a :class:`~aims_snaptrade.webhooks.receiver.WebhookReceiver`.

No framework needed: run it with any ASGI server (``uvicorn module:app``), or mount it in FastAPI
or Starlette (``app.mount("/webhooks/snaptrade", WebhookASGIApp(receiver))``). It answers POST
only (405 otherwise) and refuses bodies over ``max_body_bytes`` (413) without reading further.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aims_snaptrade.webhooks.receiver import WebhookReceiver

__all__ = ["WebhookASGIApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_MAX_BODY_BYTES = 1 << 20


class WebhookASGIApp:
    """The ASGI 3 callable. Standalone it also speaks the lifespan protocol and closes the receiver at shutdown.

    Args:
        receiver: Does the work.
        max_body_bytes: Largest body accepted (SnapTrade's are a few hundred bytes).
    """

    def __init__(self, receiver: WebhookReceiver, *, max_body_bytes: int = _MAX_BODY_BYTES) -> None:
        self.receiver = receiver
        self.max_body_bytes = max_body_bytes

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
        response = await self.receiver.ahandle(scope["headers"], b"".join(chunks))
        await _respond(send, response.status, response.body, [(k.encode(), v.encode()) for k, v in response.headers])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.receiver.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    extra = headers or [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": extra})
    await send({"type": "http.response.body", "body": body})
