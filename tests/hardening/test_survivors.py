"""Tests that kill the ten mutations the suite let through (issue 9), one promise each.

Three of the ten are killed in test_redaction_forms.py: ``aiohttp`` loggers left out of redaction
(the ``aiohttp.client`` case), ``stack_info`` not scrubbed, and the ``Signature:`` /
``Authorization:`` header-line pattern removed.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import types
import uuid

import aiohttp
import psycopg
import pytest
import urllib3.exceptions as u3
from hardening_helpers import against

from aims_snaptrade import (
    AsyncSafeSnapTradeClient,
    SafeSnapTradeClient,
    SnapTradeConnectionError,
    SnapTradeServerError,
    SnapTradeTimeoutError,
    SnapTradeUnknownOutcomeError,
)
from aims_snaptrade.error_mapping import map_exception
from aims_snaptrade.guardrails import consent_scope
from aims_snaptrade.operations import OPERATIONS, get_operation
from aims_snaptrade.redaction import MASK, redact
from aims_snaptrade.retry import RetryBudget
from aims_snaptrade.secrets import MemorySecretStore, PostgresSecretStore, SQLiteSecretStore
from aims_snaptrade.settings import Settings
from aims_snaptrade.testing import SnapTradeEmulator

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


# 1. trading operations need "trade" consent, not "read" ----------------------------------------


def test_every_trading_operation_needs_trade_consent():
    trading = [op for op in OPERATIONS.values() if op.trading and op.user_scoped]
    assert trading
    assert {consent_scope(op) for op in trading} == {"trade"}
    assert consent_scope(get_operation("list_all_user_accounts")) == "read"


class _Recorder:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def has_consent(self, user_id: str, scope: str) -> bool:
        self.asked.append((user_id, scope))
        return True


def test_an_order_asks_for_trade_consent_end_to_end():
    consent = _Recorder()
    with SnapTradeEmulator() as emu:
        user = emu.connect("trader", brokerage="ALPACA")
        store = MemorySecretStore()
        store.put(user.user_id, user.user_secret)
        with SafeSnapTradeClient(**against(emu, secret_store=store, trading_enabled=True), consent=consent) as client:
            client.place_order_now(
                user.user_id, user.account_ids[0], action="BUY", symbol="AAPL", units=1, confirm=True
            )
    # Asked before the intent is journaled, and again on the road of the order write itself.
    assert set(consent.asked) == {("trader", "trade")}


# 2. a write that provably never left is not an unknown outcome -----------------------------------


_KEY = types.SimpleNamespace(host="127.0.0.1", port=9, ssl=False, is_ssl=False)


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (u3.NewConnectionError(None, "refused"), SnapTradeConnectionError),
        (ConnectionRefusedError(111, "refused"), SnapTradeConnectionError),
        (aiohttp.ClientConnectorError(_KEY, OSError(111, "refused")), SnapTradeConnectionError),  # type: ignore[arg-type]
        (u3.ConnectTimeoutError("connect timed out"), SnapTradeTimeoutError),
        (aiohttp.ConnectionTimeoutError("connect timed out"), SnapTradeTimeoutError),
    ],
)
def test_connection_failures_before_sending_are_marked_unsent(raised, kind):
    error = map_exception(get_operation("place_force_order"), raised, {})
    assert type(error) is kind
    assert error.request_sent is False


@pytest.mark.parametrize("raised", [u3.ReadTimeoutError(None, "/x", "read timed out"), u3.ProtocolError("reset")])
def test_failures_after_sending_are_marked_sent(raised):
    assert map_exception(get_operation("place_force_order"), raised, {}).request_sent is True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed(**overrides):
    return {
        "client_id": "c",
        "consumer_key": "consumer-key-closed",
        "environment": "sandbox",
        "base_url": f"http://127.0.0.1:{_closed_port()}/api/v1",
        "secret_store": MemorySecretStore(),
        "retry": "none",
        **overrides,
    }


def test_a_write_to_a_closed_port_is_a_plain_connection_error_sync():
    with SafeSnapTradeClient(**_closed()) as client, pytest.raises(SnapTradeConnectionError) as info:
        client.register_user("nobody")
    assert not isinstance(info.value, SnapTradeUnknownOutcomeError)
    assert info.value.request_sent is False


def test_a_write_to_a_closed_port_is_a_plain_connection_error_async():
    async def run() -> SnapTradeConnectionError:
        async with AsyncSafeSnapTradeClient(**_closed()) as client:
            with pytest.raises(SnapTradeConnectionError) as info:
                await client.register_user("nobody")
            return info.value

    error = asyncio.run(run())
    assert not isinstance(error, SnapTradeUnknownOutcomeError)
    assert error.request_sent is False


# 3. a retry after a timeout costs the documented 10 tokens, after anything else 5 ------------------


def test_a_retry_after_a_timeout_costs_ten_tokens():
    budget = RetryBudget()
    assert budget.withdraw(SnapTradeTimeoutError("slow")) == 10
    assert budget.withdraw(SnapTradeServerError("500")) == 5
    assert budget.available == budget.capacity - 15


# 4. the stores' durability settings, read back from the database ---------------------------------


def test_sqlite_commits_are_fsynced(tmp_path):
    store = SQLiteSecretStore(tmp_path / "s.db")
    try:
        store.put("u1", "secret-for-sqlite-1")
        (level,) = store._connection().execute("PRAGMA synchronous").fetchone()
        assert level == 2  # FULL; NORMAL (1) can lose the last commits on power loss
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_commits_wait_for_the_server_even_when_the_role_default_is_off():
    from aims_snaptrade.secrets import Keyring

    table = f"t_{uuid.uuid4().hex[:16]}"
    schema = f"aims_hardening_{uuid.uuid4().hex[:8]}"
    conninfo = f"{POSTGRES_URL}?options=-c%20synchronous_commit%3Doff"
    store = PostgresSecretStore(conninfo, Keyring.generate("v1"), schema=schema, table=table)
    try:
        store.put("u1", "secret-for-postgres-1")
        (value,) = store._connection().execute("SHOW synchronous_commit").fetchone()
        assert value == "on"
    finally:
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# 5. Settings registers the consumer key for redaction (not only EnvCredentials) ------------------


def test_settings_register_the_consumer_key():
    key = f"consumer-key-{uuid.uuid4().hex}"
    assert redact(key) == key  # a fresh registry: nobody registered it before
    Settings.build({"client_id": "c", "consumer_key": key, "environment": "sandbox"})
    assert redact(f"x {key} y") == f"x {MASK} y"
