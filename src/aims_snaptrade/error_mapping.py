"""The one boundary where SDK, urllib3 and aiohttp failures become :mod:`aims_snaptrade.errors`.

SnapTrade's body ``code`` is read before the HTTP status: 1076 and 1083 are both 401s but ask
for different fixes, and a 403 is either a brokerage credential problem (1066) or a missing
feature (1141). The original exception is never chained: its text and attributes can hold the
request URL with ``userSecret``. A redacted :class:`~aims_snaptrade.errors.UpstreamCause` with the
original's type, text and traceback is chained instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import urllib3.exceptions as u3

from aims_snaptrade import errors as e
from aims_snaptrade._headers import header, parse_retry_after, seconds_from
from aims_snaptrade.operations import Operation
from aims_snaptrade.redaction import scrub_exception

__all__ = ["error_from_response", "map_exception", "retry_after_of", "with_upstream_cause"]

_BY_CODE: dict[str, type[e.SnapTradeError]] = {
    "1076": e.SnapTradeAuthError,
    "1083": e.SnapTradeAuthError,
    "1010": e.SnapTradeConflictError,
    "1066": e.SnapTradeBrokerageAuthError,
    "1141": e.SnapTradePermissionError,
    "1011": e.SnapTradeNotFoundError,
    "3003": e.SnapTradeConnectionDisabledError,
    "3011": e.SnapTradeConnectionDisabledError,
    "3012": e.SnapTradeDataNotReadyError,
    "3002": e.SnapTradeBrokerageUnavailableError,
    "1000": e.SnapTradeServerError,
}

_BY_STATUS: dict[int, type[e.SnapTradeError]] = {
    400: e.SnapTradeValidationError,
    401: e.SnapTradeAuthError,
    402: e.SnapTradeConnectionDisabledError,
    403: e.SnapTradePermissionError,
    404: e.SnapTradeNotFoundError,
    409: e.SnapTradeConflictError,
    410: e.SnapTradeEndpointRetiredError,
    422: e.SnapTradeValidationError,
    425: e.SnapTradeDataNotReadyError,
    429: e.SnapTradeRateLimitError,
}

_STATUS_WINS: dict[int, type[e.SnapTradeError]] = {
    410: e.SnapTradeEndpointRetiredError,
    429: e.SnapTradeRateLimitError,
}

_CODE_HINTS = {
    "1076": (
        "The request signature was rejected: check SNAPTRADE_CONSUMER_KEY matches SNAPTRADE_CLIENT_ID "
        "(no stray whitespace) and that the system clock is right. Do not retry."
    ),
    "1083": (
        "The userId/userSecret pair was rejected: the stored secret is stale or belongs to another user. "
        "If it is lost, delete the user and register it again."
    ),
}


def retry_after_of(headers: Mapping[str, str], *, now: float | None = None) -> tuple[float | None, str]:
    """Seconds to wait and which limit was hit, from a 429's headers.

    ``Retry-After`` (seconds or an HTTP date) wins; then the ``*-Reset`` of the bucket whose
    remaining count is zero.
    """
    now = time.time() if now is None else now
    account_empty = header(headers, "X-RateLimit-Account-Remaining") == "0"
    customer_empty = header(headers, "X-RateLimit-Remaining") == "0"
    scope = "account" if account_empty else "customer" if customer_empty else "unknown"
    retry_after = parse_retry_after(header(headers, "Retry-After"), now=now)
    if retry_after is None:
        reset_header = "X-RateLimit-Account-Reset" if account_empty else "X-RateLimit-Reset"
        retry_after = seconds_from(header(headers, reset_header), now)
    return retry_after, scope


def _body_fields(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return None, body[:300] or None
    if isinstance(body, Mapping):
        code = body.get("code") or body.get("default_code")
        detail = body.get("detail") or body.get("message") or body.get("error")
        return (str(code) if code is not None else None), (str(detail) if detail is not None else None)
    return None, None


def error_from_response(
    operation: Operation,
    status: int,
    headers: Mapping[str, str],
    body: Any,
    arguments: Mapping[str, Any] | None = None,
) -> e.SnapTradeError:
    """Build the error for a non-2xx answer from its status, SnapTrade code and headers."""
    code, detail = _body_fields(body)
    request_id = header(headers, "X-Request-ID")
    # The HTTP status decides where it is more specific than SnapTrade's code can contradict: a 410
    # is retired for this account whatever its body says (a retried "server error" would fetch the
    # account again on every sync), and a 429 is a rate limit.
    cls = _STATUS_WINS.get(status) or (_BY_CODE.get(code) if code else None) or _BY_STATUS.get(status)
    if cls is None:
        cls = e.SnapTradeServerError if status >= 500 else e.SnapTradeError
    message = f"SnapTrade answered {status} to {operation.name}" + (f": {detail}" if detail else "")
    common: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": request_id,
        "operation": operation.name,
        "headers": headers,
    }
    hint = _CODE_HINTS.get(code or "")
    if hint:
        common["hint"] = hint
    if cls is e.SnapTradeRateLimitError:
        retry_after, scope = retry_after_of(headers)
        if operation.name == "refresh_brokerage_authorization":
            scope = "refresh"
        return e.SnapTradeRateLimitError(message, retry_after=retry_after, limit_scope=scope, **common)
    if cls is e.SnapTradeConnectionDisabledError:
        args = arguments or {}
        authorization_id = args.get("authorization_id") or args.get("connection_id")
        return e.SnapTradeConnectionDisabledError(
            message, authorization_id=str(authorization_id) if authorization_id else None, **common
        )
    return cls(message, **common)


def map_exception(operation: Operation, exc: BaseException, arguments: Mapping[str, Any]) -> e.SnapTradeError:
    """Map any exception raised while sending ``operation`` to a library error.

    ``request_sent`` on connection errors is ``False`` only when the request provably never
    left the machine (refused connection, DNS failure, connect timeout, TLS handshake).
    """
    from snaptrade_client.exceptions import ApiException
    from snaptrade_client.exceptions_base import OpenApiException

    if isinstance(exc, e.SnapTradeError):
        return exc
    name = operation.name
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 0:  # the SDK wraps TLS failures as status 0
            return e.SnapTradeConnectionError(
                f"TLS/transport failure calling {name}: {exc.reason}", operation=name, request_sent=False
            )
        return error_from_response(operation, status, dict(exc.headers or {}), exc.body, arguments)
    if isinstance(exc, OpenApiException | TypeError | ValueError) and not isinstance(exc, json.JSONDecodeError):
        return e.SnapTradeValidationError(
            f"Invalid arguments for {name}: {exc}. Check the names and types against the SDK's "
            f"'{operation.tag}.{name}' signature (amounts as float, e.g. units=1.0).",
            operation=name,
        )
    if isinstance(exc, u3.NewConnectionError | aiohttp.ClientConnectorError | ConnectionRefusedError):
        return e.SnapTradeConnectionError(
            f"Could not connect to SnapTrade for {name}", operation=name, request_sent=False
        )
    if isinstance(exc, u3.ConnectTimeoutError | aiohttp.ConnectionTimeoutError):
        return e.SnapTradeTimeoutError(f"Connect timeout calling {name}", operation=name, request_sent=False)
    if isinstance(exc, u3.ReadTimeoutError | aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError):
        return e.SnapTradeTimeoutError(f"Read timeout: no answer from SnapTrade for {name}", operation=name)
    if isinstance(exc, json.JSONDecodeError | aiohttp.ContentTypeError):
        return e.SnapTradeConnectionError(f"SnapTrade sent a malformed response to {name}", operation=name)
    if isinstance(exc, u3.HTTPError | aiohttp.ClientError | OSError):
        return e.SnapTradeConnectionError(f"The connection failed during {name} ({type(exc).__name__})", operation=name)
    return e.SnapTradeError(f"Unexpected failure in {name} ({type(exc).__name__})", operation=name)


def with_upstream_cause(error: e.SnapTradeError, exc: BaseException) -> e.SnapTradeError:
    """Chain a redacted stand-in of ``exc`` as ``error.__cause__`` (never ``exc`` itself)."""
    if error is exc:
        return error
    cause = e.UpstreamCause(scrub_exception(exc)).with_traceback(exc.__traceback__)
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error
