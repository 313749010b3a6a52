"""The only module that knows the SnapTrade SDK's internals.

It builds the official ``SnapTrade`` client and fixes, in one place, what the SDK lacks:

* **timeouts**: the SDK sends every request with ``timeout=None`` (a stalled read hangs forever).
  The urllib3 pool is replaced by one that applies the timeouts of the current call, and the
  async path passes an ``aiohttp.ClientTimeout``.
* **no hidden retries**: urllib3's default ``Retry(3)`` silently resends (and logs the URL with
  the user secret); the library owns retries, so the pool is built with ``retries=False``.
* **connection reuse in async**: the SDK opens a new ``aiohttp.ClientSession`` (a new TCP
  connection) per call and leaks it on error; one pooled session per client is used instead.
* **exact numbers**: the SDK's JSON encoder turns every non-integral ``Decimal`` in a request body
  into a ``float`` before writing it. Decimal arguments are written with their own digits instead
  (:func:`_exact_json_body`); the signature, which the SDK computes over the body as Python values,
  sees the same number as a float (what a server parsing the JSON reads back).
* **start-up**: ``import snaptrade_client`` runs a package ``__init__`` that imports all 63
  operations' generated code (about half a second). The transport builds the SDK's
  ``ApiClient`` itself and imports an operation's generated module when that operation is first
  sent, calling the very method the ``SnapTrade`` facade would (the facade's API classes are
  mixins of these endpoint classes). See :func:`_load_sdk_package`.

When the SDK changes its internals, this file is the one that changes.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import json
import re
import sys
import threading
import time
import types
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import aiohttp
import certifi
import urllib3
import yarl

from aims_snaptrade._headers import Headers, header
from aims_snaptrade.operations import Operation
from aims_snaptrade.redaction import register_signature
from aims_snaptrade.settings import Settings

__all__ = ["AsyncTransport", "Response", "SyncTransport", "Timeouts", "answer_conforms"]


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
        headers: Response headers, a dict whose lookups ignore case (no credentials travel in them).
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


_SDK = "snaptrade_client"
_sdk_package_lock = threading.Lock()


def _load_sdk_package() -> None:
    """Make ``snaptrade_client.<module>`` importable without running the package's ``__init__``.

    The ``__init__`` only re-exports names (``SnapTrade``, ``ApiClient``, ``__version__``, ...),
    but importing ``SnapTrade`` imports every operation's generated module. The package module is
    created from its spec without executing it; the first time anybody asks it for a name that is
    not a submodule (``from snaptrade_client import SnapTrade`` in the service's own code), a
    PEP 562 ``__getattr__`` runs the real ``__init__`` then, so the package ends up exactly as a
    plain import leaves it. If the package was imported already, nothing changes.
    """
    with _sdk_package_lock:
        if _SDK in sys.modules:
            return
        spec = importlib.util.find_spec(_SDK)
        if spec is None or spec.loader is None:  # pragma: no cover - a declared dependency
            raise ModuleNotFoundError(_SDK)
        package = importlib.util.module_from_spec(spec)
        loader = spec.loader

        def complete(name: str) -> Any:
            if importlib.util.find_spec(f"{_SDK}.{name}") is not None:
                # `from snaptrade_client import api_client` asks the package first: a submodule.
                return importlib.import_module(f"{_SDK}.{name}")
            with _sdk_package_lock:
                if package.__dict__.pop("__getattr__", None) is not None:
                    loader.exec_module(package)
            try:
                return package.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {_SDK!r} has no attribute {name!r}") from None

        package.__getattr__ = complete  # type: ignore[method-assign]
        sys.modules[_SDK] = package


@functools.cache
def _sdk_types() -> Any:
    """The SDK types the transport reads per call, imported once (the SDK is imported lazily)."""
    from snaptrade_client.rest import AsyncResponseWrapper
    from snaptrade_client.schemas import Unset

    return types.SimpleNamespace(AsyncResponseWrapper=AsyncResponseWrapper, Unset=Unset)


def _endpoint_module(operation: Operation) -> str:
    """The SDK module of one operation: ``paths/<path in snake case>/<method>.py``."""
    path = operation.path.strip("/").replace("{", "").replace("}", "")
    path = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", path).lower()
    return f"{_SDK}.paths.{re.sub(r'[^a-z0-9]+', '_', path).strip('_') or 'root'}.{operation.method.lower()}"


def _endpoint_class(operation: Operation) -> type:
    """The generated class defining the operation's sync and async methods."""
    _load_sdk_package()
    module = importlib.import_module(_endpoint_module(operation))
    for value in vars(module).values():
        if isinstance(value, type) and operation.name in vars(value) and operation.async_name in vars(value):
            return value
    raise LookupError(f"{operation.name} is not in {module.__name__}")  # pragma: no cover - test_operations


def _remember_auth_settings(configuration: Any) -> None:
    """Build the SDK's auth settings once per set of key values instead of four times per request.

    ``Configuration.auth_settings()`` rebuilds six dictionaries from ``api_key`` every time it is
    asked, and a request asks four times. Its answer depends only on ``api_key`` (whose timestamp
    the SDK rewrites before each request) and the key prefixes, so it is remembered per their
    current values: every caller gets what the SDK would have computed at that moment, and the SDK
    only reads it. A ``refresh_api_key_hook`` (which may change the keys as a side effect) turns
    this off.
    """
    compute = configuration.auth_settings
    remembered: dict[Any, Any] = {}

    def auth_settings() -> Any:
        if configuration.refresh_api_key_hook is not None:
            return compute()
        key = (tuple(configuration.api_key.items()), tuple(configuration.api_key_prefix.items()))
        found = remembered.get(key)
        if found is None:
            if len(remembered) >= 4:  # the timestamp changes every second: keep only the latest few
                remembered.clear()
            found = remembered[key] = compute()
        return found

    configuration.auth_settings = auth_settings


class _Sdk:
    """The SDK's ``ApiClient`` and, per operation, an instance of its endpoint class (made on first use)."""

    def __init__(self, settings: Settings) -> None:
        _load_sdk_package()
        from snaptrade_client.api_client import ApiClient
        from snaptrade_client.auth import AuthMode, SnapTradeAuth
        from snaptrade_client.configuration import Configuration

        key = settings.consumer_key.get_secret_value()
        auth: AuthMode
        if settings.key_type == "personal":
            auth = SnapTradeAuth.personal_api_key(consumer_key=key, client_id=settings.client_id)
        else:
            auth = SnapTradeAuth.commercial_api_key(consumer_key=key, client_id=settings.client_id)
        configuration = Configuration(host=settings.base_url, auth=auth)
        _remember_auth_settings(configuration)
        self.api_client: Any = ApiClient(configuration)
        self._endpoints: dict[str, Any] = {}

    def method(self, operation: Operation, name: str) -> Any:
        """The bound SDK method ``name`` (the operation's sync or async name)."""
        endpoint = self._endpoints.get(operation.name)
        if endpoint is None:
            cls = _endpoint_class(operation)
            _exact_bodies(sys.modules[cls.__module__])
            endpoint = self._endpoints[operation.name] = cls(self.api_client)
        return getattr(endpoint, name)


class _ExactNumber(float):
    """A ``Decimal`` argument on its way through the SDK: a float to the SDK, its own digits on the wire.

    The SDK's schemas accept a float, and its signature hook ``json.dumps`` the body's Python
    values (a ``Decimal`` would raise there); the body itself is written by
    :func:`_exact_json_body`, which writes :attr:`exact` instead of the float. The library only
    passes numbers a float carries exactly (see ``aims_snaptrade.trading.models``), so the signed
    float and the written digits are the same number.
    """

    exact: Decimal

    def __new__(cls, exact: Decimal) -> _ExactNumber:
        number = super().__new__(cls, exact)
        number.exact = exact
        return number


def _exact_arguments(value: Any) -> Any:
    """``value`` with every ``Decimal`` (in lists and dicts too) wrapped as an :class:`_ExactNumber`."""
    if isinstance(value, Decimal):
        return _ExactNumber(value)
    if isinstance(value, Mapping):
        return {k: _exact_arguments(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exact_arguments(v) for v in value]
    return value


def _has_exact(value: Any) -> bool:
    if isinstance(value, _ExactNumber):
        return True
    if isinstance(value, Mapping):
        return any(_has_exact(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_exact(v) for v in value)
    return False


def _exact_json_body(in_data: Any) -> bytes:
    """The JSON the SDK would write for ``in_data``, with each :class:`_ExactNumber` as its own digits.

    Each exact number is first replaced by a token no caller's text can contain (a fresh UUID),
    the structure written as the SDK writes it (compact, UTF-8), then each quoted token replaced
    by the number's fixed-point digits.
    """
    digits: dict[str, str] = {}
    salt = uuid.uuid4().hex

    def tokens(value: Any) -> Any:
        if isinstance(value, _ExactNumber):
            token = f"{salt}-{len(digits)}"
            # Always with a fraction: the SDK signs the float (``2.0``), and a server re-reading
            # the JSON to check the signature must read a float back, not the int ``2``.
            text = format(value.exact, "f")
            digits[token] = text if "." in text else text + ".0"
            return token
        if isinstance(value, Mapping):
            return {k: tokens(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [tokens(v) for v in value]
        return value

    text = json.dumps(tokens(in_data), separators=(",", ":"), ensure_ascii=False)
    for token, number in digits.items():
        text = text.replace(json.dumps(token), number, 1)
    return text.encode("utf-8")


def _exact_bodies(module: types.ModuleType) -> None:
    """Make the endpoint module's JSON request bodies write :class:`_ExactNumber` values exactly.

    Each generated endpoint module holds its ``api_client.RequestBody`` objects at module level;
    their ``serialize`` is wrapped (once) on the instance: the SDK's own serialisation still runs
    first (its schema checks refuse what they refuse), then, when the body carries exact numbers,
    its bytes are replaced. Bodies without exact numbers are exactly what the SDK wrote.
    """
    from snaptrade_client.api_client import JSONDetector, RequestBody

    for body in list(vars(module).values()):
        if not isinstance(body, RequestBody) or "serialize" in vars(body):
            continue
        sdk_serialize = body.serialize

        def serialize(in_data: Any, content_type: str, _sdk: Any = sdk_serialize) -> Any:
            serialized = _sdk(in_data, content_type)
            if "body" in serialized and JSONDetector._content_type_is_json(content_type) and _has_exact(in_data):
                serialized = {**serialized, "body": _exact_json_body(in_data)}
            return serialized

        body.serialize = serialize  # type: ignore[method-assign]


def _signature(headers: Any) -> str | None:
    """The ``Signature`` of the request headers the SDK sends (urllib3's, whose lookup ignores case)."""
    if isinstance(headers, urllib3.HTTPHeaderDict):
        return headers.get("Signature")
    return header(headers or {}, "Signature")


# Most calls use the settings' timeouts (only a deadline shortens a read): build each kind once.
# Sharing is safe: a connection pool clones a urllib3 Timeout before use; aiohttp's is frozen.
@functools.lru_cache(maxsize=256)
def _urllib3_timeout(timeouts: Timeouts) -> urllib3.Timeout:
    return urllib3.Timeout(connect=timeouts.connect, read=timeouts.read)


@functools.lru_cache(maxsize=256)
def _aiohttp_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(sock_connect=timeouts.connect, sock_read=timeouts.read)


class _TimeoutPoolManager(urllib3.PoolManager):
    """A pool that applies the current call's timeouts, whatever the SDK passes (always ``None``).

    Every request goes to one origin (the settings' ``base_url``), so requests for it skip the
    pool manager's per-request routing (URL parsing, pool-key normalisation, the pools' LRU) and
    go straight to one connection pool (several percent of a request's client-side cost). Redirects
    are not followed on that path (SnapTrade's API does not redirect, and a signed URL with a user
    secret must not travel to wherever a ``Location`` points): a 3xx is answered as it came.
    """

    def __init__(self, origin: str, **pool_kw: Any) -> None:
        super().__init__(**pool_kw)
        parsed = urllib3.util.parse_url(origin)
        self._origin = f"{parsed.scheme}://{parsed.netloc}"
        scheme = parsed.scheme or "https"
        self._pool = self._new_pool(scheme, parsed.host or "", parsed.port or (443 if scheme == "https" else 80))

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
        # The SDK signs just before sending: register the signature before anything can echo it.
        register_signature(_signature(kw.get("headers")))
        timeouts = _current_timeouts.get()
        if timeouts is not None:
            kw["timeout"] = _urllib3_timeout(timeouts)
        origin = self._origin
        if url.startswith(origin) and url[len(origin) : len(origin) + 1] in ("/", ""):
            kw["assert_same_host"] = False
            kw["redirect"] = False
            return self._pool.urlopen(method, url[len(origin) :] or "/", **kw)
        return super().urlopen(method, url, redirect=redirect, **kw)

    def clear(self) -> None:
        self._pool.close()
        super().clear()


def response_of(operation: Operation, api_response: Any, started: float) -> Response:
    """Turn the SDK's response object into ours."""
    headers = Headers(api_response.headers)
    body = api_response.body
    if isinstance(body, _sdk_types().Unset):
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
        request_id=headers.get("X-Request-ID"),
        elapsed=time.perf_counter() - started,
    )


class SyncTransport:
    """Sends one request through the SDK's sync methods (urllib3)."""

    def __init__(self, settings: Settings, *, pool_size: int = 10) -> None:
        self._sdk = _Sdk(settings)
        api_client = self._sdk.api_client
        old = api_client.rest_client.pool_manager
        api_client.rest_client.pool_manager = _TimeoutPoolManager(
            settings.base_url,
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
        method = self._sdk.method(operation, operation.name)
        token = _current_timeouts.set(timeouts)
        started = time.perf_counter()
        try:
            api_response = method(**_exact_arguments(arguments) if operation.method != "GET" else arguments)
        finally:
            _current_timeouts.reset(token)
        return response_of(operation, api_response, started)

    def close(self) -> None:
        """Close pooled connections."""
        self._sdk.api_client.rest_client.pool_manager.clear()


class _SharedSession:
    """What the SDK sees as its per-call session: closing it must not close the pool."""

    __slots__ = ()

    async def close(self) -> None:
        return None


class _ReadErrorResponse:
    """An aiohttp error response, already read, offering what the SDK's *sync* deserializer asks of urllib3.

    For a status its schema does not declare (410, 425, ...) the SDK's async methods fall back to
    the sync ``deserialize``, which calls ``supports_chunked_reads()`` and reads ``.data``: on an
    aiohttp response that is an ``AttributeError`` instead of the ``ApiException`` to map.
    """

    def __init__(self, response: aiohttp.ClientResponse, data: bytes) -> None:
        self._response = response
        self.data = data

    def supports_chunked_reads(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


class AsyncTransport:
    """Sends one request through the SDK's async methods over one pooled aiohttp session."""

    def __init__(self, settings: Settings, *, pool_size: int = 100) -> None:
        self._sdk = _Sdk(settings)
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        api_client = self._sdk.api_client
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
        register_signature(_signature(headers))
        timeouts = _current_timeouts.get()
        client_timeout = _aiohttp_timeout(timeouts) if timeouts is not None else None
        data = body if body else (dict(fields) if fields else None)
        started = time.time()
        # encoded=True: the query was signed exactly as the SDK encoded it; yarl would otherwise
        # re-normalise it (%40 back to @) and SnapTrade would reject the signature (1076).
        response = await self._session_for_loop().request(
            method, yarl.URL(url, encoded=True), data=data, headers=headers, timeout=client_timeout
        )
        http_response: Any = response
        if response.status >= 400:
            http_response = _ReadErrorResponse(response, await response.read())
        return _sdk_types().AsyncResponseWrapper(http_response, time.time() - started, cast(Any, _SharedSession()))

    async def send(self, operation: Operation, arguments: Mapping[str, Any], timeouts: Timeouts) -> Response:
        """Send ``operation`` with SDK keyword ``arguments``; SDK and aiohttp errors propagate raw."""
        method = self._sdk.method(operation, operation.async_name)
        token = _current_timeouts.set(timeouts)
        started = time.perf_counter()
        try:
            api_response = await method(**_exact_arguments(arguments) if operation.method != "GET" else arguments)
        finally:
            _current_timeouts.reset(token)
        return response_of(operation, api_response, started)

    async def aclose(self) -> None:
        """Close the pooled session."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


@functools.cache
def _answer_schema(operation: Operation) -> Any:
    """The SDK's schema class of ``operation``'s 200 JSON answer (``None`` if it declares none)."""
    _load_sdk_package()
    module = importlib.import_module(_endpoint_module(operation))
    declared = getattr(module, "_status_code_to_response", {}).get("200")
    media = getattr(declared, "content", None) or {}
    found = media.get("application/json")
    return getattr(found, "schema", None)


def answer_conforms(operation: Operation, body: Any) -> str | None:
    """``None`` when ``body`` is what the SDK's own schema allows for a 200 answer to ``operation``.

    Otherwise a short reason naming the kind of mismatch, never the body's values (an answer can
    carry personal data). An empty body (``None``) never conforms: no schema here allows it.
    """
    if body is None:
        return "an empty body (or null)"
    schema = _answer_schema(operation)
    if schema is None:  # pragma: no cover - every operation the library validates declares one
        return None
    try:
        schema.from_openapi_data_oapg(body)
    except Exception as exc:
        where = getattr(exc, "path_to_item", None)
        at = " at " + ".".join(str(p) for p in where[1:]) if isinstance(where, list | tuple) and len(where) > 1 else ""
        return f"{type(exc).__name__}{at}"
    return None
