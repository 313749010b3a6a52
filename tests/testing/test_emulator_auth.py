"""Authentication as SnapTrade does it: signed requests, clock skew, user secrets, key kinds."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from emulator_helpers import signed_request
from snaptrade_client.exceptions import ApiException

from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator, sign
from aims_snaptrade.testing.config import ClientCredentials, EmulatorConfig


def _error(exc: pytest.ExceptionInfo[ApiException]) -> tuple[int, dict[str, Any]]:
    body = exc.value.body
    assert isinstance(body, dict)
    return int(exc.value.status), body


def test_correct_key_works(sdk: Any) -> None:
    response = sdk.authentication.register_snap_trade_user(user_id="u1")
    assert response.status == 200
    assert response.body["userId"] == "u1"
    assert response.body["userSecret"]


def test_wrong_consumer_key_gets_401_1076(emu: SnapTradeEmulator) -> None:
    from snaptrade_client.auth import SnapTradeAuth
    from snaptrade_client.client import SnapTrade

    bad = SnapTrade(
        host=emu.base_url, auth=SnapTradeAuth.commercial_api_key(consumer_key="wrong-key", client_id=emu.client_id)
    )
    with pytest.raises(ApiException) as exc:
        bad.authentication.list_snap_trade_users()
    status, body = _error(exc)
    assert status == 401
    assert body == {"detail": "Unable to verify signature sent", "status_code": 401, "code": "1076"}
    assert exc.value.headers["X-Request-ID"]


def test_unknown_client_gets_401_1076(emu: SnapTradeEmulator) -> None:
    response = signed_request(emu, "GET", "/snapTrade/listUsers", client_id="NOBODY")
    assert response.status == 401
    assert response.json()["code"] == "1076"


def test_tampered_query_gets_401(emu: SnapTradeEmulator, alice: ConnectedUser) -> None:
    params = {"userId": alice.user_id, "userSecret": alice.user_secret}
    ok = signed_request(emu, "GET", "/accounts", params=params)
    assert ok.status == 200
    now = str(int(time.time()))
    tampered = f"userId=mallory&userSecret={alice.user_secret}&clientId={emu.client_id}&timestamp={now}"
    response = signed_request(emu, "GET", "/accounts", params=params, timestamp=int(now), tamper_query=tampered)
    assert response.status == 401
    assert response.json()["code"] == "1076"


def test_reordered_query_is_a_different_signature(emu: SnapTradeEmulator) -> None:
    # SnapTrade signs the raw query string as sent: the same parameters in another order fail.
    now = int(time.time())
    reordered = f"timestamp={now}&clientId={emu.client_id}"
    response = signed_request(emu, "GET", "/snapTrade/listUsers", timestamp=now, tamper_query=reordered)
    assert response.status == 401


def test_tampered_body_gets_401(emu: SnapTradeEmulator) -> None:
    from urllib3 import PoolManager

    now = int(time.time())
    query = f"clientId={emu.client_id}&timestamp={now}"
    signature = sign(emu.consumer_key, "/snapTrade/registerUser", query, {"userId": "bob"})
    response = PoolManager(retries=False).request(
        "POST",
        f"{emu.base_url}/snapTrade/registerUser?{query}",
        body=b'{"userId":"mallory"}',
        headers={"Signature": signature, "Content-Type": "application/json"},
    )
    assert response.status == 401
    assert response.json()["code"] == "1076"
    assert emu.state.find_user(emu.client_id, "mallory") is None


def test_missing_signature_gets_401(emu: SnapTradeEmulator) -> None:
    from urllib3 import PoolManager

    url = f"{emu.base_url}/snapTrade/listUsers?clientId={emu.client_id}&timestamp={int(time.time())}"
    response = PoolManager(retries=False).request("GET", url)
    assert response.status == 401
    assert response.json()["code"] == "1076"


@pytest.mark.parametrize("offset", [-3600, -301, 301, 3600])
def test_timestamp_outside_the_skew_window_gets_401(emu: SnapTradeEmulator, offset: int) -> None:
    response = signed_request(emu, "GET", "/snapTrade/listUsers", timestamp=int(time.time()) + offset)
    assert response.status == 401
    assert response.json()["code"] == "1076"


@pytest.mark.parametrize("offset", [-240, 0, 240])
def test_timestamp_inside_the_skew_window_is_accepted(emu: SnapTradeEmulator, offset: int) -> None:
    assert signed_request(emu, "GET", "/snapTrade/listUsers", timestamp=int(time.time()) + offset).status == 200


def test_skew_window_is_configurable() -> None:
    with SnapTradeEmulator(clock_skew_seconds=5) as emu:
        assert signed_request(emu, "GET", "/snapTrade/listUsers", timestamp=int(time.time()) - 30).status == 401
        assert signed_request(emu, "GET", "/snapTrade/listUsers").status == 200


def test_millisecond_timestamps_are_rejected(emu: SnapTradeEmulator) -> None:
    response = signed_request(emu, "GET", "/snapTrade/listUsers", timestamp=int(time.time() * 1000))
    assert response.status == 401


@pytest.mark.parametrize("signed_path", ["/snapTrade/listUsers", "/api/v1/snapTrade/listUsers"])
def test_both_signed_path_forms_are_accepted(emu: SnapTradeEmulator, signed_path: str) -> None:
    assert signed_request(emu, "GET", "/snapTrade/listUsers", sign_path=signed_path).status == 200


def test_a_signature_over_another_path_is_rejected(emu: SnapTradeEmulator) -> None:
    assert signed_request(emu, "GET", "/snapTrade/listUsers", sign_path="/accounts").status == 401


def test_paths_without_the_prefix_are_served(emu: SnapTradeEmulator) -> None:
    from urllib3 import PoolManager

    now = int(time.time())
    query = f"clientId={emu.client_id}&timestamp={now}"
    response = PoolManager(retries=False).request(
        "GET",
        f"{emu.root_url}/snapTrade/listUsers?{query}",
        headers={"Signature": sign(emu.consumer_key, "/snapTrade/listUsers", query)},
    )
    assert response.status == 200
    assert response.json() == []


def test_wrong_user_secret_gets_401_1083(sdk: Any, alice: ConnectedUser) -> None:
    with pytest.raises(ApiException) as exc:
        sdk.account_information.list_all_user_accounts(user_id=alice.user_id, user_secret="not-the-secret")
    status, body = _error(exc)
    assert (status, body["code"], body["status_code"]) == (401, "1083", 401)


def test_unknown_user_gets_401_1083(sdk: Any) -> None:
    with pytest.raises(ApiException) as exc:
        sdk.account_information.list_all_user_accounts(user_id="ghost", user_secret="whatever")
    assert _error(exc)[1]["code"] == "1083"


def test_users_of_another_client_are_invisible(alice: ConnectedUser) -> None:
    other = ClientCredentials("OTHER-CLIENT", "other-consumer-key-0000")
    config = EmulatorConfig(clients=(*EmulatorConfig().clients, other))
    with SnapTradeEmulator(config) as emu:
        emu.create_user("shared-name")
        response = signed_request(
            emu, "GET", "/snapTrade/listUsers", client_id=other.client_id, consumer_key=other.consumer_key
        )
        assert response.status == 200
        assert response.json() == []


def test_personal_key_needs_no_user_and_cannot_register(emu: SnapTradeEmulator) -> None:
    personal = emu.sdk(personal=True, retries=False)
    assert personal.account_information.list_all_user_accounts().body == {"results": []}
    login = personal.authentication.login_snap_trade_user(connection_type="read").body
    emu.complete_connection(login["redirectURI"], scenario="cash_only")
    accounts = personal.account_information.list_all_user_accounts().body["results"]
    assert [a["display_name"] for a in accounts] == ["Cash Account"]
    # The SDK does not even sign registerUser in personal mode: the request is anonymous.
    with pytest.raises(ApiException) as exc:
        personal.authentication.register_snap_trade_user(user_id="someone")
    assert _error(exc)[0] == 401
    creds = emu.personal_credentials
    assert creds is not None
    signed = signed_request(
        emu,
        "POST",
        "/snapTrade/registerUser",
        body={"userId": "someone"},
        client_id=creds.client_id,
        consumer_key=creds.consumer_key,
    )
    assert signed.status == 403
    assert signed.json()["code"] == "1141"


def test_status_endpoint_is_unsigned_and_reports_server_time(emu: SnapTradeEmulator) -> None:
    from urllib3 import PoolManager

    response = PoolManager(retries=False).request("GET", emu.base_url + "/")
    assert response.status == 200
    body = response.json()
    assert body["online"] is True
    assert isinstance(body["version"], int)
    server_time = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert abs((server_time - datetime.now(UTC)).total_seconds()) < 5


def test_every_response_has_a_unique_request_id(emu: SnapTradeEmulator, sdk: Any) -> None:
    ids = {sdk.api_status.check().headers["X-Request-ID"] for _ in range(5)}
    bad = signed_request(emu, "GET", "/snapTrade/listUsers", consumer_key="nope")
    ids.add(bad.headers["X-Request-ID"])
    missing = signed_request(emu, "GET", "/no/such/endpoint")
    assert missing.status == 404
    ids.add(missing.headers["X-Request-ID"])
    assert len(ids) == 7


def test_trailing_slash_paths_verify_as_signed(emu: SnapTradeEmulator) -> None:
    assert signed_request(emu, "GET", "/snapTrade/listUsers/").status == 200


def test_user_ids_with_reserved_characters_work_with_the_sync_sdk(sdk: Any) -> None:
    for user_id in ("user@example.com", "a b", "é+ü/x&y=z"):
        secret = sdk.authentication.register_snap_trade_user(user_id=user_id).body["userSecret"]
        assert sdk.account_information.list_all_user_accounts(user_id=user_id, user_secret=secret).status == 200
    assert sdk.authentication.list_snap_trade_users().body == ["user@example.com", "a b", "é+ü/x&y=z"]


def test_a_query_re_encoded_after_signing_is_rejected(emu: SnapTradeEmulator) -> None:
    # What aiohttp/yarl do to the SDK's async requests: the signed "%40" is sent as "@".
    now = int(time.time())
    signed_query = f"userId=a%40b&clientId={emu.client_id}&timestamp={now}"
    sent_query = f"userId=a@b&clientId={emu.client_id}&timestamp={now}"
    signature = sign(emu.consumer_key, "/snapTrade/listUsers", signed_query)
    response = signed_request(
        emu, "GET", "/snapTrade/listUsers", timestamp=now, tamper_query=sent_query, signature=signature
    )
    assert response.status == 401
