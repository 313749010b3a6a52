"""The reproducers of issue 9: each failed before the fix and passes after it."""

from __future__ import annotations

import math
import uuid

import pytest
from hardening_helpers import against

from aims_snaptrade import (
    CallOptions,
    SafeSnapTradeClient,
    SnapTradeConfigurationError,
    SnapTradeError,
    SnapTradeGuardrailError,
    SnapTradeMalformedResponseError,
    SnapTradeValidationError,
)
from aims_snaptrade.guardrails import check_call
from aims_snaptrade.operations import get_operation
from aims_snaptrade.redaction import MASK, redact
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.settings import Settings
from aims_snaptrade.testing import Fault, SnapTradeEmulator


@pytest.fixture(scope="module")
def emu():
    with SnapTradeEmulator() as emulator:
        yield emulator


@pytest.fixture
def store():
    return MemorySecretStore()


@pytest.fixture
def client(emu, store):
    emu.faults.clear()
    with SafeSnapTradeClient(**against(emu, secret_store=store)) as made:
        yield made


def test_a_bytes_user_secret_is_refused_and_poisons_nothing(client, emu):
    with pytest.raises(SnapTradeValidationError, match="user_secret must be a non-empty string"):
        client.call("list_all_user_accounts", user_id="u1", user_secret=b"bytes")
    fresh = f"fresh-secret-{uuid.uuid4().hex}"
    from aims_snaptrade.redaction import register_secret

    register_secret(fresh)
    assert redact(fresh) == MASK  # the next new secret is still masked
    user = f"after-bytes-{uuid.uuid4().hex[:8]}"
    assert client.register_user(user).user_id == user  # and registration still works


@pytest.mark.parametrize("user_id", ["x" * 1025, "nul\x00inside", "", "   ", 42, None])
def test_register_user_checks_the_id_before_snaptrade_creates_anything(client, emu, user_id):
    before = emu.journal.count(operation="register_snap_trade_user")
    with pytest.raises(SnapTradeValidationError):
        client.register_user(user_id)
    assert emu.journal.count(operation="register_snap_trade_user") == before  # no orphan at SnapTrade


def test_register_user_checks_the_store_answers_before_snaptrade_creates_anything(client, emu, store):
    store.close()
    before = emu.journal.count(operation="register_snap_trade_user")
    with pytest.raises(SnapTradeError):
        client.register_user(f"closed-{uuid.uuid4().hex[:8]}")
    assert emu.journal.count(operation="register_snap_trade_user") == before


@pytest.mark.parametrize(
    ("operation", "body", "call"),
    [
        ("check", [None], lambda c, u: c.api_status()),
        ("check", {"online": {"x": 1}}, lambda c, u: c.api_status()),
        ("list_all_user_accounts", {"results": [None]}, lambda c, u: c.list_accounts(u.user_id)),
        ("list_all_user_accounts", {"results": 5}, lambda c, u: c.list_accounts(u.user_id)),
        ("list_all_user_accounts", [1, 2], lambda c, u: c.list_accounts(u.user_id)),
        ("list_all_user_accounts", {"results": [{"id": None}]}, lambda c, u: c.list_accounts(u.user_id)),
        ("get_user_account_balance", {"x": 1}, lambda c, u: c.get_balances(u.user_id, u.account_ids[0])),
        ("get_user_account_balance", [{"cash": "NaN"}], lambda c, u: c.get_balances(u.user_id, u.account_ids[0])),
        ("get_all_account_positions", {"results": ["x"]}, lambda c, u: c.get_positions(u.user_id, u.account_ids[0])),
        ("get_account_activities", {"data": {"a": 1}}, lambda c, u: c.get_activities(u.user_id, u.account_ids[0])),
        ("login_snap_trade_user", {"sessionId": "s"}, lambda c, u: c.connection_portal_url(u.user_id)),
    ],
)
def test_a_malformed_2xx_body_is_a_typed_error_naming_operation_and_request_id(
    client, emu, store, operation, body, call
):
    user = emu.connect(f"malformed-{uuid.uuid4().hex[:8]}", brokerage="ALPACA")
    store.put(user.user_id, user.user_secret)
    emu.faults.add(Fault.answer(body), operation=operation)
    with pytest.raises(SnapTradeMalformedResponseError) as info:
        call(client, user)
    error = info.value
    assert error.operation == operation
    assert error.request_id
    assert error.__cause__ is None and error.__suppress_context__  # pydantic's text would quote the body


def test_an_odd_register_answer_is_typed_and_says_how_to_recover(client, emu):
    emu.faults.add(Fault.answer({"userId": "x", "userSecret": 5}), operation="register_snap_trade_user")
    with pytest.raises(SnapTradeMalformedResponseError, match="without a userSecret") as info:
        client.register_user(f"odd-{uuid.uuid4().hex[:8]}")
    assert "Delete the user" in info.value.hint


_BASE = {"client_id": "c", "consumer_key": "consumer-key-1", "environment": "sandbox"}


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"base_url": "http://[::1"}, "base_url"),
        ({"base_url": "https://%00"}, "base_url"),
        ({"base_url": "https://api.example:99999/api/v1"}, "base_url"),
        ({"base_url": "http://0"}, "base_url"),  # found by the 10,000-example fuzz: the SDK refuses it
        ({"base_url": "http://localhost:8080/api/v1"}, "base_url"),
        ({"read_timeout": math.inf}, "read_timeout"),
        ({"rate_limit_max_wait": math.nan}, "rate_limit_max_wait"),
    ],
)
def test_settings_that_cannot_be_parsed_name_the_variable(overrides, variable):
    with pytest.raises(SnapTradeConfigurationError, match=variable):
        Settings.build({**_BASE, **overrides})


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"secret_store_url": "sqlite:////proc/secrets.db"}, "SNAPTRADE_SECRET_STORE_URL"),
        ({"secret_store_url": "sqlite:///" + "x" * 5000 + ".db"}, "SNAPTRADE_SECRET_STORE_URL"),
        ({"secret_store_url": "sqlite:////tmp/nul%00.db"}, "SNAPTRADE_SECRET_STORE_URL"),
        ({"rate_limit_storage_url": "memory://{["}, "SNAPTRADE_RATE_LIMIT_STORAGE_URL"),
    ],
)
def test_stores_that_cannot_be_opened_name_the_variable(overrides, variable):
    with pytest.raises(SnapTradeConfigurationError, match=variable):
        SafeSnapTradeClient(**_BASE, base_url="http://127.0.0.1:9/api/v1", **overrides)


def test_a_nul_in_a_file_variable_names_it():
    env = {"SNAPTRADE_CLIENT_ID": "c", "SNAPTRADE_ENVIRONMENT": "sandbox", "SNAPTRADE_CONSUMER_KEY_FILE": "/tmp/a\x00b"}
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_CONSUMER_KEY_FILE"):
        Settings.from_env(env)


@pytest.mark.parametrize("options", ["x", 5, {"timeout": 1}])
def test_options_of_the_wrong_type_are_a_validation_error(client, options):
    with pytest.raises(SnapTradeValidationError, match="options must be a CallOptions"):
        client.call("check", options=options)


@pytest.mark.parametrize(
    "timeout", [math.inf, -math.inf, math.nan, 0, -1, 601, 1e300, (1.0, math.inf), (math.nan, 1.0), True, "5"]
)
def test_non_finite_or_absurd_timeouts_are_refused(timeout):
    with pytest.raises(SnapTradeValidationError, match="timeout"):
        CallOptions(timeout=timeout)


@pytest.mark.parametrize("deadline", [math.inf, math.nan, 0, -1, True])
def test_non_finite_deadlines_are_refused(deadline):
    with pytest.raises(SnapTradeValidationError, match="deadline"):
        CallOptions(deadline=deadline)


@pytest.mark.parametrize("max_wait", [math.inf, math.nan, -1, 1e9])
def test_non_finite_or_absurd_waits_are_refused(max_wait):
    with pytest.raises(SnapTradeValidationError, match="max_wait"):
        CallOptions(max_wait=max_wait)


@pytest.mark.parametrize("confirm", ["yes", 1, "True", [True]])
def test_only_true_confirms_a_destructive_call(client, emu, confirm):
    before = emu.journal.count(operation="delete_snap_trade_user")
    with pytest.raises((SnapTradeValidationError, SnapTradeGuardrailError)):
        client.delete_user("someone", confirm=confirm)
    assert emu.journal.count(operation="delete_snap_trade_user") == before


@pytest.mark.parametrize("confirm", ["yes", 1, "True"])
def test_the_guardrail_itself_confirms_only_on_true(confirm):
    settings = Settings.build(_BASE)
    with pytest.raises(SnapTradeGuardrailError, match="confirmation"):
        check_call(settings, get_operation("delete_snap_trade_user"), {}, confirm=confirm)
