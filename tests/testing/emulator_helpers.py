"""Helpers shared by the emulator tests: raw SDK calls and hand-signed HTTP requests."""

from __future__ import annotations

import inspect
import json
import time
from typing import Any
from urllib.parse import urlencode

import urllib3

from aims_snaptrade.testing import SnapTradeEmulator, sign


def call_deserialized(api: Any, name: str, **kwargs: Any) -> Any:
    """Call an SDK operation with deserialisation ON (the public methods switch it off).

    The SDK then validates the body against its response schema and raises on any mismatch.
    """
    mapped = getattr(api, f"_{name}_mapped_args")(**kwargs)
    operation = getattr(api, f"_{name}_oapg")
    accepted = inspect.signature(operation).parameters
    arguments: dict[str, Any] = {"skip_deserialization": False}
    for attribute, parameter in (
        ("body", "body"),
        ("query", "query_params"),
        ("header", "header_params"),
        ("path", "path_params"),
    ):
        if parameter in accepted and getattr(mapped, attribute, None) is not None:
            arguments[parameter] = getattr(mapped, attribute)
    return operation(**arguments)


def signed_request(
    emu: SnapTradeEmulator,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    body: Any = None,
    client_id: str | None = None,
    consumer_key: str | None = None,
    timestamp: int | None = None,
    sign_path: str | None = None,
    tamper_query: str | None = None,
    signature: str | None = None,
    pool: urllib3.PoolManager | None = None,
) -> urllib3.BaseHTTPResponse:
    """Send a request signed by hand (SnapTrade's published algorithm) with urllib3, no retries.

    ``path`` is below ``/api/v1``. ``sign_path`` overrides the path put in the signature;
    ``tamper_query`` replaces the query string after signing; ``signature`` replaces the header.
    """
    query = dict(params or {})
    query["clientId"] = client_id or emu.client_id
    query["timestamp"] = str(int(time.time()) if timestamp is None else timestamp)
    raw_query = urlencode(query)
    payload = None if body is None else json.dumps(body, separators=(",", ":"))
    header = signature or sign(consumer_key or emu.consumer_key, sign_path or path, raw_query, body)
    url = f"{emu.base_url}{path}?{tamper_query or raw_query}"
    headers = {"Signature": header}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    http = pool or urllib3.PoolManager(retries=False)
    return http.request(method, url, body=payload, headers=headers, retries=False)
