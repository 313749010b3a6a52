"""The typed helpers and the pass-through, through the real SDK against the emulator."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aims_snaptrade import (
    CallOptions,
    SnapTradeAuthError,
    SnapTradeConflictError,
    SnapTradeConnectionDisabledError,
    SnapTradeDataNotReadyError,
    SnapTradeEndpointRetiredError,
    SnapTradeGuardrailError,
    SnapTradeNotFoundError,
    SnapTradeValidationError,
)
from aims_snaptrade.testing import SnapTradeEmulator


def test_register_user_stores_the_issued_secret_and_returns_none_of_it(client, emu, store):
    user = client.register_user("bob")
    assert user.user_id == "bob"
    assert "secret" not in repr(user).lower()
    secret = store.get("bob")
    assert secret and secret == emu.state.find_user(emu.client_id, "bob").secret
    with pytest.raises(SnapTradeConflictError) as info:
        client.register_user("bob")
    assert info.value.code == "1010"
    assert emu.journal.count(operation="register_snap_trade_user") == 2


def test_whole_read_flow_with_exact_money(client, emu, store):
    client.register_user("carol")
    link = client.connection_portal_url("carol", custom_redirect="https://aims.example/back")
    assert link.redirect_uri.startswith("http")
    remaining = (link.expires_at - datetime.now(UTC)).total_seconds()
    assert 280 < remaining <= 300
    emu.complete_connection(link.redirect_uri)
    accounts = client.list_accounts("carol")
    assert accounts and all(a.id for a in accounts)
    first = accounts[0]
    balances = client.get_balances("carol", first.id)
    assert balances and all(isinstance(b.cash, Decimal) for b in balances if b.cash is not None)
    positions = client.get_positions("carol", first.id)
    assert positions and all(isinstance(p.units, Decimal) for p in positions)
    # Decimal straight from the JSON text: no binary float residue.
    assert all(p.price == Decimal(str(p.price)) and len(str(p.price)) < 20 for p in positions if p.price)


def test_activities_follow_every_page(client, emu, alice):
    account = alice.account_ids[0]
    activities = client.get_activities(alice.user_id, account)
    pages = emu.journal.count(operation="get_account_activities")
    raw = emu.sdk(retries=False).account_information.get_account_activities(
        account_id=account, user_id=alice.user_id, user_secret=alice.user_secret, limit=1
    )
    total = raw.body["pagination"]["total"]
    assert len(activities) == total
    assert total > 1000  # the seeded account spans two pages
    assert pages == -(-total // 1000)
    assert len({a.id for a in activities}) == total


def test_pass_through_fills_the_user_secret(client, alice):
    response = client.call("list_brokerage_authorizations", user_id=alice.user_id)
    assert response.status == 200
    assert response.request_id
    assert [c["id"] for c in response.body] == [alice.authorization_id]


def test_pass_through_rejects_bad_input_before_sending(client, emu, alice):
    before = len(emu.journal)
    with pytest.raises(SnapTradeValidationError, match="list_all_user_accounts"):
        client.call("list_all_user_acounts", user_id=alice.user_id)
    with pytest.raises(SnapTradeValidationError, match="query_params"):
        client.call("list_all_user_accounts", user_id=alice.user_id, query_params={"x": 1})
    with pytest.raises(SnapTradeValidationError, match="Invalid arguments"):
        client.call("list_all_user_accounts", user_id=alice.user_id, acount_id="x")
    with pytest.raises(SnapTradeValidationError, match="user_id"):
        client.list_accounts("")
    with pytest.raises(SnapTradeValidationError, match="timeout"):
        client.list_accounts(alice.user_id, options=CallOptions(timeout=-1))
    with pytest.raises(SnapTradeValidationError, match=r"rate_limit_mode.*max_wait"):
        CallOptions(rate_limit_mode="sometimes", max_wait=-2)  # type: ignore[arg-type]
    assert len(emu.journal) == before


def test_unknown_user_secret_is_reported_without_a_request(client, emu):
    with pytest.raises(SnapTradeNotFoundError, match="register_user"):
        client.list_accounts("nobody")
    assert len(emu.journal) == 0


def test_wrong_stored_secret_is_1083_and_not_retried(make_client, emu, alice, store):
    store.put(alice.user_id, "not-the-right-secret-000")
    client = make_client(retry="standard")
    with pytest.raises(SnapTradeAuthError) as info:
        client.list_accounts(alice.user_id)
    assert info.value.code == "1083"
    assert info.value.request_id
    assert "stale" in str(info.value) or "1083" in str(info.value)
    assert emu.journal.count(operation="list_all_user_accounts") == 1


def test_wrong_consumer_key_is_1076_with_the_fix(make_client, emu, alice):
    client = make_client(consumer_key="wrong-consumer-key-123456")
    with pytest.raises(SnapTradeAuthError) as info:
        client.list_accounts(alice.user_id)
    assert info.value.code == "1076"
    assert "SNAPTRADE_CONSUMER_KEY" in str(info.value)
    assert not info.value.retryable


def test_disabled_connection_serves_stale_reads_and_refresh_says_reconnect(client, emu, alice):
    emu.disable_connection(alice.authorization_id)
    assert client.list_accounts(alice.user_id)  # stale data, no error, as the real API does
    with pytest.raises(SnapTradeConnectionDisabledError) as info:
        client.call("refresh_brokerage_authorization", user_id=alice.user_id, authorization_id=alice.authorization_id)
    assert info.value.status == 402
    assert info.value.code in {"3003", "3011"}
    assert info.value.authorization_id == alice.authorization_id
    link = client.connection_portal_url(alice.user_id, reconnect=info.value.authorization_id)
    emu.complete_connection(link.redirect_uri)
    client.call("refresh_brokerage_authorization", user_id=alice.user_id, authorization_id=alice.authorization_id)


def test_populating_connection_is_retryable_425(client, emu, alice):
    emu.set_populating(alice.authorization_id, 30)
    with pytest.raises(SnapTradeDataNotReadyError) as info:
        client.get_positions(alice.user_id, alice.account_ids[0])
    assert info.value.status == 425 and info.value.code == "3012" and info.value.retryable


def test_retired_endpoint_is_an_error_not_an_empty_list(store):
    with SnapTradeEmulator(legacy_holdings_retired=True) as emu:
        user = emu.connect("dave")
        store.put(user.user_id, user.user_secret)
        from aims_snaptrade import SafeSnapTradeClient

        with (
            SafeSnapTradeClient(
                client_id=emu.client_id,
                consumer_key=emu.consumer_key,
                environment="sandbox",
                base_url=emu.base_url,
                secret_store=store,
            ) as client,
            pytest.raises(SnapTradeEndpointRetiredError) as info,
        ):
            client.call("get_user_holdings", user_id=user.user_id, account_id=user.account_ids[0])
    assert info.value.status == 410


def test_delete_user_needs_confirmation_and_purges_the_local_secret(client, emu, alice, store):
    with pytest.raises(SnapTradeGuardrailError, match="confirm=True"):
        client.delete_user(alice.user_id)
    assert len(emu.journal) == 0
    deleted = client.delete_user(alice.user_id, confirm=True)
    assert deleted.local_secret_removed and store.get(alice.user_id) is None
    assert emu.journal.count(operation="delete_snap_trade_user") == 1


def test_rotate_user_secret_stores_the_new_secret(client, emu, alice, store):
    old = store.get(alice.user_id)
    client.rotate_user_secret(alice.user_id)
    new = store.get(alice.user_id)
    assert new and new != old
    assert store.pending_rotations() == []
    assert client.list_accounts(alice.user_id)  # the new secret works


def test_api_status_measures_clock_skew(client):
    status = client.api_status()
    assert status.online
    assert status.clock_skew_seconds is not None and abs(status.clock_skew_seconds) < 5


def test_lost_rotation_answer_is_detected_reported_and_resolvable(make_client, emu, alice, store, caplog):
    from aims_snaptrade import SnapTradeSecretRotationError
    from aims_snaptrade.testing import Fault

    client = make_client(retry="patient")
    old = store.get(alice.user_id)
    emu.faults.add(Fault.lost_response(), operation="reset_snap_trade_user_secret")
    with pytest.raises(SnapTradeSecretRotationError):
        client.rotate_user_secret(alice.user_id)
    assert emu.journal.count(operation="reset_snap_trade_user_secret") == 1
    assert store.pending_rotations() == [alice.user_id]
    assert store.get(alice.user_id) == old

    with caplog.at_level("ERROR", logger="aims_snaptrade"):
        restarted = make_client()
    assert alice.user_id in caplog.text and "reconnect" in caplog.text
    assert restarted.pending_secret_rotations == [alice.user_id]
    # The reset did happen at SnapTrade: the stored secret is stale, and the error says what to do.
    with pytest.raises(SnapTradeSecretRotationError, match="register it again"):
        restarted.resolve_secret_rotation(alice.user_id)


def test_rotation_that_never_reached_snaptrade_resolves_to_the_stored_secret(make_client, emu, alice, store):
    store.begin_rotation(alice.user_id)  # as if the process died right after marking
    client = make_client()
    assert client.resolve_secret_rotation(alice.user_id) is True
    assert store.pending_rotations() == []
    assert client.list_accounts(alice.user_id)


def test_sdk_schema_validation_is_a_typed_error_before_sending(make_client, emu, market_order):
    client = make_client(trading_enabled=True, order_intent_store_url="memory://")
    with pytest.raises(SnapTradeValidationError, match="units") as info:
        client.call("get_order_impact", **{**market_order, "units": 1})  # the SDK wants a float
    assert "units=1.0" in str(info.value)
    assert len(emu.journal) == 0


def test_bad_construction_is_a_typed_error_naming_the_fix(make_client):
    from aims_snaptrade import SnapTradeConfigurationError

    with pytest.raises(SnapTradeConfigurationError, match="retry"):
        make_client(retry="reckless")
    with pytest.raises(SnapTradeConfigurationError, match=r"[Rr]edis"):
        make_client(rate_limit_storage_url="redis://127.0.0.1:1/0")
    with pytest.raises(SnapTradeConfigurationError, match="rate_limit_plan must be one of"):
        make_client(rate_limit_plan="gold")
