"""Timeouts, hidden retries, unknown outcomes and connection reuse, sync and async."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aims_snaptrade import (
    CallOptions,
    SnapTradeBrokerageUnavailableError,
    SnapTradeConnectionError,
    SnapTradeError,
    SnapTradeTimeoutError,
    SnapTradeUnknownOutcomeError,
)
from aims_snaptrade.testing import Fault


def test_a_stalled_read_is_a_timeout_not_a_hang(client, emu, alice):
    emu.faults.add(Fault.timeout(hold=5.0), operation="list_all_user_accounts")
    started = time.monotonic()
    with pytest.raises(SnapTradeTimeoutError) as info:
        client.list_accounts(alice.user_id, options=CallOptions(timeout=(1.0, 0.3)))
    assert time.monotonic() - started < 2.0
    assert info.value.retryable and info.value.operation == "list_all_user_accounts"


def test_client_wide_read_timeout_applies_to_every_call(make_client, emu, alice):
    client = make_client(read_timeout=0.3)
    emu.faults.add(Fault.latency(1.0), operation="get_all_account_positions")
    with pytest.raises(SnapTradeTimeoutError):
        client.get_positions(alice.user_id, alice.account_ids[0])
    assert client.list_accounts(alice.user_id)  # the next call is unaffected


def test_urllib3_never_retries_behind_our_back(client, emu, alice):
    emu.faults.add(Fault.drop(), operation="list_all_user_accounts", times=1)
    with pytest.raises(SnapTradeConnectionError):
        client.list_accounts(alice.user_id)
    # The SDK alone would have resent it up to three times, silently.
    assert emu.journal.count(operation="list_all_user_accounts") == 1


def test_reads_are_retried_by_policy_and_succeed(make_client, emu, alice):
    client = make_client(retry="standard")
    emu.faults.add(Fault.status(500), operation="list_all_user_accounts", times=2)
    assert client.list_accounts(alice.user_id)
    assert emu.journal.count(operation="list_all_user_accounts") == 3


def test_lost_registration_is_an_unknown_outcome_sent_once(make_client, emu, store):
    client = make_client(retry="patient")
    emu.faults.add(Fault.lost_response(), operation="register_snap_trade_user")
    with pytest.raises(SnapTradeUnknownOutcomeError) as info:
        client.register_user("erin")
    assert "delete_user" in str(info.value)
    assert emu.journal.count(operation="register_snap_trade_user") == 1
    assert emu.state.find_user(emu.client_id, "erin") is not None  # it did happen server-side
    assert store.get("erin") is None


def test_lost_order_without_key_is_never_resent(make_client, emu, alice, market_order, order_now):
    client = make_client(retry="patient", trading_enabled=True, order_intent_store_url="memory://")
    emu.faults.add(Fault.lost_response(), operation="place_force_order")
    with pytest.raises(SnapTradeUnknownOutcomeError):
        order_now(client, market_order)
    assert emu.journal.count(operation="place_force_order") == 1


def test_malformed_answer_to_a_read_is_a_connection_error(client, emu, alice):
    emu.faults.add(Fault.malformed_json(), operation="list_all_user_accounts")
    with pytest.raises(SnapTradeConnectionError, match="malformed"):
        client.list_accounts(alice.user_id)


async def test_async_client_shares_one_pool_and_maps_errors(make_async_client, emu, alice):
    async with make_async_client() as client:
        results = await asyncio.gather(*(client.list_accounts(alice.user_id) for _ in range(40)))
        assert all(r == results[0] for r in results)
        session = client._transport._session
        assert session is not None and not session.closed
        emu.faults.add(Fault.status(503, code="3002"), operation="list_all_user_accounts")
        with pytest.raises(SnapTradeBrokerageUnavailableError) as info:
            await client.list_accounts(alice.user_id)
        assert info.value.status == 503 and info.value.retryable
        emu.faults.add(Fault.timeout(hold=5.0), operation="get_all_account_positions")
        started = time.monotonic()
        with pytest.raises(SnapTradeTimeoutError):
            await client.get_positions(alice.user_id, alice.account_ids[0], options=CallOptions(timeout=0.3))
        assert time.monotonic() - started < 2.0
    assert session.closed


async def test_async_lost_registration_is_unknown_outcome(make_async_client, emu):
    emu.faults.add(Fault.lost_response(), operation="register_snap_trade_user")
    async with make_async_client(retry="patient") as client:
        with pytest.raises(SnapTradeUnknownOutcomeError):
            await client.register_user("frank")
    assert emu.journal.count(operation="register_snap_trade_user") == 1


@pytest.mark.parametrize("user_id", ["user@example.com", "név+tag/x y"])
async def test_async_signatures_survive_reserved_characters_in_user_ids(make_async_client, make_client, user_id):
    # aiohttp re-normalises URLs by default (%40 -> @), which breaks the signature of the raw SDK.
    async with make_async_client() as client:
        await client.register_user(user_id)
        link = await client.connection_portal_url(user_id)
        assert link.redirect_uri
    assert make_client().list_accounts(user_id) == []


def test_a_5xx_answer_to_a_write_is_an_unknown_outcome_not_a_retryable_failure(
    make_client, emu, alice, market_order, order_now
):
    client = make_client(retry="patient", trading_enabled=True, order_intent_store_url="memory://")
    emu.faults.add(Fault.status(500), operation="place_force_order")
    with pytest.raises(SnapTradeUnknownOutcomeError) as info:
        order_now(client, market_order)
    assert info.value.status == 500 and info.value.request_id and not info.value.retryable
    assert emu.journal.count(operation="place_force_order") == 1


def test_async_client_used_from_a_second_event_loop_says_so(make_async_client, alice):
    from aims_snaptrade import SnapTradeConfigurationError

    client = make_async_client()
    assert asyncio.run(client.list_accounts(alice.user_id))
    with pytest.raises(SnapTradeConfigurationError, match="one client per event loop"):
        asyncio.run(client.list_accounts(alice.user_id))
    asyncio.run(client.aclose())


def test_one_sync_client_serves_many_threads(client, emu, alice):
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> int:
        timeout = CallOptions(timeout=5.0 + i % 3)  # per-call timeouts must not bleed across threads
        return len(client.list_accounts(alice.user_id, options=timeout))

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(work, range(120)))
    assert counts == [len(alice.account_ids)] * 120
    assert emu.journal.count(operation="list_all_user_accounts", status=200) == 120


def _redirecting_server(to: str) -> tuple[Any, list[str]]:
    """A loopback server answering every request with a 302 to ``to``; records the paths asked."""
    import http.server
    import threading

    asked: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(302)
            self.send_header("Location", to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, asked


def test_a_redirect_is_not_followed_so_a_signed_url_goes_nowhere_else(make_client, emu, alice):
    # The URL carries the user secret and a signature: a Location header must not send it on.
    server, asked = _redirecting_server(emu.base_url.rsplit("/api/v1", 1)[0])
    try:
        client = make_client(base_url=f"http://127.0.0.1:{server.server_address[1]}/api/v1")
        with pytest.raises(SnapTradeError) as info:
            client.list_accounts(alice.user_id)
        assert info.value.status == 302
        assert len(asked) == 1 and asked[0].startswith("/api/v1/accounts")
        assert emu.journal.count(operation="list_all_user_accounts") == 0  # the redirect's target
    finally:
        server.shutdown()
        server.server_close()


async def test_response_headers_read_in_any_case_and_serialise_as_a_dict(make_client, make_async_client, alice):
    import dataclasses
    import json
    import pickle

    response = make_client().call("list_all_user_accounts", user_id=alice.user_id)
    async with make_async_client() as client:
        answered = await client.call("list_all_user_accounts", user_id=alice.user_id)
    for one in (response, answered):
        assert one.request_id and one.headers["x-request-id"] == one.headers["X-REQUEST-ID"] == one.request_id
        again = pickle.loads(pickle.dumps(one))
        assert again.body == one.body and again.headers["X-Request-Id"] == one.request_id
        assert isinstance(one.headers, dict) and json.loads(json.dumps(one.headers)) == dict(one.headers)
        assert json.loads(json.dumps(dataclasses.asdict(one)))["headers"] == dict(one.headers)


def test_a_tls_failure_is_a_connection_error_and_nothing_was_sent(make_client, emu, alice):
    # The emulator speaks plain HTTP: the TLS handshake fails before any request is written.
    client = make_client(base_url=emu.base_url.replace("http://", "https://", 1))
    with pytest.raises(SnapTradeConnectionError) as info:
        client.list_accounts(alice.user_id)
    assert info.value.request_sent is False
    assert emu.journal.count(operation="list_all_user_accounts") == 0


async def test_a_tls_failure_is_a_connection_error_and_nothing_was_sent_async(make_async_client, emu, alice):
    async with make_async_client(base_url=emu.base_url.replace("http://", "https://", 1)) as client:
        with pytest.raises(SnapTradeConnectionError) as info:
            await client.list_accounts(alice.user_id)
    assert info.value.request_sent is False
    assert emu.journal.count(operation="list_all_user_accounts") == 0
