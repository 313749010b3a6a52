"""Rate limits as SnapTrade applies them: rolling windows, exact counts, SnapTrade's 429."""

from __future__ import annotations

import time
from typing import Any

import pytest
from emulator_helpers import signed_request
from snaptrade_client.exceptions import ApiException

from aims_snaptrade.testing import RateLimit, SnapTradeEmulator
from aims_snaptrade.testing.ratelimit import SlidingWindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_counts_down_and_refuses_exactly_when_full() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(RateLimit(3, 10.0), clock)
    states = []
    for _ in range(3):
        states.append(limiter.hit("c"))
        clock.now += 1
    assert [s.remaining for s in states] == [2, 1, 0]
    assert all(s.allowed for s in states)
    clock.now += 1  # t+4
    refused = limiter.hit("c")
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == 6  # the first request leaves the window at t+10
    assert refused.reset_seconds == 6
    clock.now += 6
    again = limiter.hit("c")
    assert again.allowed
    assert again.remaining == 0  # requests 2 and 3 are still in the window, plus this one
    assert limiter.hit("other").remaining == 2  # keys are independent


def test_limiter_refusals_do_not_count() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(RateLimit(1, 5.0), clock)
    assert limiter.hit("c").allowed
    for _ in range(10):
        assert not limiter.hit("c").allowed
    clock.now += 5.01
    assert limiter.hit("c").allowed


def test_customer_limit_headers_count_down_and_429_exactly_when_exhausted() -> None:
    with SnapTradeEmulator(customer_rate_limit=RateLimit(60, 2.0)) as emu:
        sdk = emu.sdk(retries=False)
        remaining = []
        for _ in range(60):
            response = sdk.authentication.list_snap_trade_users()
            assert response.headers["X-RateLimit-Limit"] == "60"
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
            assert 0 <= int(response.headers["X-RateLimit-Reset"]) <= 2
        assert remaining == list(range(59, -1, -1))
        with pytest.raises(ApiException) as exc:
            sdk.authentication.list_snap_trade_users()
        assert exc.value.status == 429
        retry_after = int(exc.value.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        assert exc.value.body == {
            "detail": f"Request was throttled. Expected available in {retry_after} seconds.",
            "status_code": 429,
            "code": "0000",
        }
        assert exc.value.headers["X-RateLimit-Remaining"] == "0"
        assert emu.journal.count(status=429) == 1


def test_window_rolls_over() -> None:
    with SnapTradeEmulator(customer_rate_limit=RateLimit(2, 0.6)) as emu:
        sdk = emu.sdk(retries=False)
        sdk.authentication.list_snap_trade_users()
        sdk.authentication.list_snap_trade_users()
        with pytest.raises(ApiException):
            sdk.authentication.list_snap_trade_users()
        time.sleep(0.65)
        response = sdk.authentication.list_snap_trade_users()
        assert response.headers["X-RateLimit-Remaining"] == "1"


def test_rejected_requests_do_not_draw_on_the_window() -> None:
    with SnapTradeEmulator(customer_rate_limit=RateLimit(5, 30.0)) as emu:
        for _ in range(3):
            bad = signed_request(emu, "GET", "/snapTrade/listUsers", consumer_key="wrong")
            assert bad.status == 401
            assert bad.headers["X-RateLimit-Remaining"] == "5"
        assert signed_request(emu, "GET", "/snapTrade/listUsers").headers["X-RateLimit-Remaining"] == "4"


def test_status_endpoint_carries_headers_of_its_own_bucket(emu: SnapTradeEmulator, sdk: Any) -> None:
    first = sdk.api_status.check()
    second = sdk.api_status.check()
    assert int(first.headers["X-RateLimit-Remaining"]) - 1 == int(second.headers["X-RateLimit-Remaining"])
    signed = sdk.authentication.list_snap_trade_users()
    assert signed.headers["X-RateLimit-Remaining"] == "249"


def _personal_account(emu: SnapTradeEmulator) -> tuple[Any, list[str]]:
    personal = emu.sdk(personal=True, retries=False)
    creds = emu.personal_credentials
    assert creds is not None
    user = emu.connect("ignored", client_id=creds.client_id)
    return personal, list(user.account_ids)


def test_account_limit_applies_to_personal_keys_per_account() -> None:
    config: dict[str, Any] = {
        "account_rate_limit": RateLimit(3, 30.0),
        "account_rate_limit_scope": "personal",
        "customer_rate_limit": RateLimit(100, 30.0),
    }
    with SnapTradeEmulator(**config) as emu:
        personal, accounts = _personal_account(emu)
        first, second = accounts
        seen = []
        for call in (
            personal.account_information.get_user_account_balance,
            personal.account_information.get_all_account_positions,
            personal.account_information.get_user_account_balance,
        ):
            response = call(account_id=first)
            seen.append(response.headers["X-RateLimit-Account-Remaining"])
            assert response.headers["X-RateLimit-Account-Limit"] == "3"
        assert seen == ["2", "1", "0"]
        with pytest.raises(ApiException) as exc:
            personal.account_information.get_account_activities(account_id=first)
        assert exc.value.status == 429
        assert exc.value.headers["X-RateLimit-Account-Remaining"] == "0"
        assert int(exc.value.headers["X-RateLimit-Remaining"]) > 0  # the customer window has room
        assert exc.value.body["code"] == "0000"
        other = personal.account_information.get_user_account_balance(account_id=second)
        assert other.headers["X-RateLimit-Account-Remaining"] == "2"
        # Listing accounts is not an account-data endpoint: no account bucket.
        listing = personal.account_information.list_all_user_accounts()
        assert "X-RateLimit-Account-Remaining" not in listing.headers


def test_account_limit_scope(scope: str) -> None:
    with SnapTradeEmulator(account_rate_limit=RateLimit(2, 30.0), account_rate_limit_scope=scope) as emu:
        user = emu.connect("alice")
        sdk = emu.sdk(retries=False)
        outcomes: list[Any] = []
        for _ in range(3):
            try:
                response = sdk.account_information.get_user_account_balance(
                    account_id=user.account_ids[0], user_id=user.user_id, user_secret=user.user_secret
                )
                outcomes.append(response.headers.get("X-RateLimit-Account-Remaining"))
            except ApiException as exc:
                outcomes.append(exc.status)
        expected = [None, None, None] if scope == "personal" else ["1", "0", 429]
        assert outcomes == expected


@pytest.fixture(params=["personal", "all"])
def scope(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_account_limit_is_off_by_default(emu: SnapTradeEmulator, alice: Any) -> None:
    sdk = emu.sdk(retries=False)
    for _ in range(12):  # more than SnapTrade's 10/min
        response = sdk.account_information.get_user_account_balance(
            account_id=alice.account_ids[0], user_id=alice.user_id, user_secret=alice.user_secret
        )
        assert "X-RateLimit-Account-Limit" not in response.headers


def test_customer_limit_can_be_switched_off() -> None:
    with SnapTradeEmulator(customer_rate_limit=None) as emu:
        response = emu.sdk().authentication.list_snap_trade_users()
        assert "X-RateLimit-Limit" not in response.headers
