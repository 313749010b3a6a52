"""A WSGI application around a :class:`~aims_snaptrade.webhooks.receiver.WebhookReceiver` (Flask, Django...).

Mount it with the framework's WSGI dispatching, or call ``receiver.handle(headers, body)`` from a
view and turn the :class:`~aims_snaptrade.webhooks.receiver.WebhookResponse` into the framework's
response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from aims_snaptrade.webhooks.receiver import WebhookReceiver

__all__ = ["WebhookWSGIApp"]

_MAX_BODY_BYTES = 1 << 20


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


class WebhookWSGIApp:
    """The WSGI callable: POST only (405 otherwise), bodies up to ``max_body_bytes`` (413 beyond)."""

    def __init__(self, receiver: WebhookReceiver, *, max_body_bytes: int = _MAX_BODY_BYTES) -> None:
        """Serve ``receiver``."""
        self.receiver = receiver
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Handle one request."""
        json_type = ("Content-Type", "application/json")
        if environ.get("REQUEST_METHOD") != "POST":
            start_response(_status_line(405), [json_type, ("Allow", "POST")])
            return [b'{"status":"method_not_allowed"}']
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.max_body_bytes:
            start_response(_status_line(413), [json_type])
            return [b'{"status":"rejected","error":"body too large or without a valid Content-Length"}']
        body = environ["wsgi.input"].read(length) if length else b""
        headers = [(key[5:].replace("_", "-"), value) for key, value in environ.items() if key.startswith("HTTP_")]
        response = self.receiver.handle(headers, body)
        start_response(_status_line(response.status), list(response.headers))
        return [response.body]
