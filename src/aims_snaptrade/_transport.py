"""The only module that knows the SnapTrade SDK's internals.

It builds the official ``SnapTrade`` client and fixes, in one place, what the SDK lacks:

* **timeouts**: the SDK sends every request with ``timeout=None`` (a stalled read hangs forever).
  The urllib3 pool is replaced by one that applies the timeouts of the current call, and the
  async path passes an ``aiohttp.ClientTimeout``.
* **no hidden retries**: urllib3's default ``Retry(3)`` silently resends (and logs the URL with
  the user secret); the library owns retries, so the pool is built with ``retries=False``.
* **connection reuse in async**: the SDK opens a new ``aiohttp.ClientSession`` (a new TCP
  connection) per call and leaks it on error; one pooled session per client is used instead.

When the SDK changes its internals, this file is the one that changes.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import certifi
import urllib3
import yarl

from aims_snaptrade.operations import Operation
from aims_snaptrade.settings import Settings

__all__ = ["AsyncTransport", "Response", "SyncTransport", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connect and read timeouts of one call, in seconds."""

    connect: float
    read: float


@dataclass(frozen=True, slots=True)
class Response:
    """A successful (2xx) SnapTrade response.

    Attributes:
        operation: SDK operation name.
        status: HTTP status.
        headers: Response headers (no credentials travel in SnapTrade's response headers).
        body: Parsed JSON body (``None`` for an empty body).
        request_id: ``X-Request-ID``, for SnapTrade support.
        elapsed: Seconds from sending to the parsed body.
    """

    operation: str
    status: int
    headers: Mapping[str, str]
    body: Any
    request_id: str | None
    elapsed: float


_current_timeouts: contextvars.ContextVar[Timeouts | None] = contextvars.ContextVar(
    "aims_snaptrade_timeouts", default=None
)


def _sdk_client(settings: Settings) -> Any:
    from snaptrade_client.auth import AuthMode, SnapTradeAuth
    from snaptrade_client.client import SnapTrade

    key = settings.consumer_key.get_secret_value()
    auth: AuthMode
    if settings.key_type == "personal":
        auth = SnapTradeAuth.personal_api_key(consumer_key=key, client_id=settings.client_id)
    else:
        auth = SnapTradeAuth.commercial_api_key(consumer_key=key, client_id=settings.client_id)
    return SnapTrade(host=settings.base_url, auth=auth)


class _TimeoutPoolManager(urllib3.PoolManager):
    """A pool that applies the current call's timeouts, whatever the SDK passes (always ``None``)."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        timeouts = _current_timeouts.get()
        if timeouts is not None:
            kwargs["timeout"] = urllib3.Timeout(connect=timeouts.connect, read=timeouts.read)
        return super().request(method, url, *args, **kwargs)


def _headers(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(raw or {}).items()}


def response_of(operation: Operation, api_response: Any, started: float) -> Response:
    """Turn the SDK's response object into ours."""
    from snaptrade_client.schemas import Unset

    headers = _headers(api_response.headers)
    body = api_response.body
    if isinstance(body, Unset):
        # The SDK swallows a JSON decoding failure and hands back `unset`: parse the raw bytes
        # again so a malformed answer raises (JSONDecodeError) instead of reading as "no data".
        raw = getattr(api_response.response, "data", b"") or b""
        body = json.loads(raw) if raw.strip() else None
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace") if body else None
    return Response(
        operation=operation.name,
        status=int(api_response.status),
        headers=headers,
        body=body,
        request_id=headers.get("X-Request-ID") or headers.get("x-request-id"),
        elapsed=time.perf_counter() - started,
    )


class SyncTransport:
    """Sends one request through the SDK's sync methods (urllib3)."""

    def __init__(self, settings: Settings, *, pool_size: int = 10) -> None:
        self._sdk = _sdk_client(settings)
        api_client = self._sdk.api_status.api_client
        old = api_client.rest_client.pool_manager
        api_client.rest_client.pool_manager = _TimeoutPoolManager(
            num_pools=4,
            maxsize=pool_size,
            block=False,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
        old.clear()

    def send(self, operation: Operation, arguments: Mapping[str, Any], timeouts: Timeouts) -> Response:
        """Send ``operation`` with SDK keyword ``arguments``; SDK and urllib3 errors propagate raw."""
        method = getattr(getattr(self._sdk, operation.tag), operation.name)
        token = _current_timeouts.set(timeouts)
        started = time.perf_counter()
        try:
            api_response = method(**arguments)
        finally:
            _current_timeouts.reset(token)
        return response_of(operation, api_response, started)

    def close(self) -> None:
        """Close pooled connections."""
        self._sdk.api_status.api_client.rest_client.pool_manager.clear()


class _SharedSession:
    """What the SDK sees as its per-call session: closing it must not close the pool."""

    __slots__ = ()

    async def close(self) -> None:
        return None


class AsyncTransport:
    """Sends one request through the SDK's async methods over one pooled aiohttp session."""

    def __init__(self, settings: Settings, *, pool_size: int = 100) -> None:
        self._sdk = _sdk_client(settings)
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        api_client = self._sdk.api_status.api_client
        # The SDK calls `self.async_request(...)`; an instance attribute shadows its method.
        api_client.async_request = self._async_request

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _async_request(
        self,
        method: str,
        url: str,
        headers: Any = None,
        fields: Any = None,
        body: Any = None,
        stream: bool = False,
        timeout: Any = None,  # noqa: ASYNC109 - mirrors the SDK signature
        **kwargs: Any,
    ) -> Any:
        from snaptrade_client.rest import AsyncResponseWrapper

        timeouts = _current_timeouts.get()
        client_timeout = (
            aiohttp.ClientTimeout(sock_connect=timeouts.connect, sock_read=timeouts.read)
            if timeouts is not None
            else None
        )
        data = body if body else (dict(fields) if fields else None)
        started = time.time()
        # encoded=True: the query was signed exactly as the SDK encoded it; yarl would otherwise
        # re-normalise it (%40 back to @) and SnapTrade would reject the signature (1076).
        response = await self._session_for_loop().request(
            method, yarl.URL(url, encoded=True), data=data, headers=headers, timeout=client_timeout
        )
        return AsyncResponseWrapper(response, time.time() - started, cast(Any, _SharedSession()))

    async def send(self, operation: Operation, arguments: Mapping[str, Any], timeouts: Timeouts) -> Response:
        """Send ``operation`` with SDK keyword ``arguments``; SDK and aiohttp errors propagate raw."""
        method = getattr(getattr(self._sdk, operation.tag), operation.async_name)
        token = _current_timeouts.set(timeouts)
        started = time.perf_counter()
        try:
            api_response = await method(**arguments)
        finally:
            _current_timeouts.reset(token)
        return response_of(operation, api_response, started)

    async def aclose(self) -> None:
        """Close the pooled session."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
