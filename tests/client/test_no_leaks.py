"""Acceptance: no consumer key, user secret or signature in any log record, error text, repr or traceback.

The client is driven against a closed port and against a server answering 401 and 500 with
bodies that echo the whole request (URL with userSecret, headers with Signature, body).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import traceback
from collections.abc import Iterator

import pytest
from aiohttp import web

from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient, SnapTradeError
from aims_snaptrade.secrets import MemorySecretStore

CONSUMER_KEY = "leak-test-consumer-key-9f8e7d6c5b4a"
USER_SECRET = "leak-test-user-secret-1a2b3c4d5e6f"


class EchoServer:
    """Answers every request with ``status`` and a body echoing the request; records signatures."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.signatures: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.signatures.append(request.headers.get("Signature", ""))
        echo = {
            "detail": f"echo {request.method} {request.path_qs}",
            "url": str(request.url),
            "headers": dict(request.headers),
            "body": await request.text(),
            "status_code": self.status,
            "code": "1076" if self.status == 401 else "1000",
        }
        return web.json_response(echo, status=self.status, headers={"X-Request-ID": "echo-req-1"})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> EchoServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def echo_401() -> Iterator[EchoServer]:
    with EchoServer(401) as server:
        yield server


@pytest.fixture
def echo_500() -> Iterator[EchoServer]:
    with EchoServer(500) as server:
        yield server


def _client_kwargs(base_url: str) -> dict[str, object]:
    store = MemorySecretStore()
    store.put("u1", USER_SECRET)
    return {
        "client_id": "LEAK-TEST",
        "consumer_key": CONSUMER_KEY,
        "environment": "sandbox",
        "base_url": base_url,
        "secret_store": store,
        "retry": "standard",
        "connect_timeout": 0.5,
        "read_timeout": 2.0,
    }


def _renderings(error: BaseException) -> list[str]:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    cause = error.__cause__
    while cause is not None:
        texts += [str(cause), repr(cause), json.dumps(vars(cause), default=str)]
        cause = cause.__cause__
    texts.append(json.dumps({k: v for k, v in vars(error).items()}, default=str))
    return texts


def _assert_clean(texts: list[str], signatures: list[str]) -> None:
    secrets = [CONSUMER_KEY, USER_SECRET, *[s for s in signatures if s]]
    for text in texts:
        for secret in secrets:
            assert secret not in text


def _sync_calls(base_url: str) -> list[BaseException]:
    caught: list[BaseException] = []
    with SafeSnapTradeClient(**_client_kwargs(base_url)) as client:
        for call in (
            lambda: client.list_accounts("u1"),
            lambda: client.get_positions("u1", "acc-1"),
            lambda: client.register_user("u2"),
            lambda: client.call("place_force_order", user_id="u1", account_id="a", action="BUY"),
        ):
            with pytest.raises(SnapTradeError) as info:
                call()
            caught.append(info.value)
    return caught


async def _async_calls(base_url: str) -> list[BaseException]:
    caught: list[BaseException] = []
    async with AsyncSafeSnapTradeClient(**_client_kwargs(base_url)) as client:
        for call in (lambda: client.list_accounts("u1"), lambda: client.register_user("u2")):
            with pytest.raises(SnapTradeError) as info:
                await call()
            caught.append(info.value)
    return caught


@pytest.mark.parametrize("target", ["closed", "echo_401", "echo_500"])
def test_nothing_secret_leaks_sync_and_async(target, request, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "snaptrade_client", "aiohttp", "aims_snaptrade"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    server = None if target == "closed" else request.getfixturevalue(target)
    port = closed_port() if server is None else server.port
    base_url = f"http://127.0.0.1:{port}/api/v1"

    errors = _sync_calls(base_url) + asyncio.run(_async_calls(base_url))

    signatures = server.signatures if server else []
    if server is not None:
        # the server really received the secrets: the test would catch an echo that slipped through
        assert signatures and all(signatures)
    texts = [text for error in errors for text in _renderings(error)]
    records = caplog.records
    assert records, "the DEBUG capture saw nothing: the test would prove nothing"
    for record in records:
        texts.append(record.getMessage())
        texts.append(logging.Formatter().format(record))
    _assert_clean(texts, signatures)
    if server is not None:
        # The URL with the user secret did reach the logs and error bodies, masked.
        assert any("userSecret=***" in t for t in texts)
    if target == "echo_500":
        assert any(e.status == 500 and e.request_id == "echo-req-1" for e in errors if isinstance(e, SnapTradeError))
