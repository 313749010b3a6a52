"""SnapTrade's codes and statuses map to the documented error classes, with what to do."""

from __future__ import annotations

import pickle

import pytest

from aims_snaptrade import errors as e
from aims_snaptrade.error_mapping import error_from_response, retry_after_of
from aims_snaptrade.operations import OPERATIONS

READ = OPERATIONS["list_all_user_accounts"]


@pytest.mark.parametrize(
    ("status", "code", "cls", "retryable"),
    [
        (401, "1076", e.SnapTradeAuthError, False),
        (401, "1083", e.SnapTradeAuthError, False),
        (400, "1010", e.SnapTradeConflictError, False),
        (403, "1066", e.SnapTradeBrokerageAuthError, False),
        (403, "1141", e.SnapTradePermissionError, False),
        (404, "1011", e.SnapTradeNotFoundError, False),
        (402, "3003", e.SnapTradeConnectionDisabledError, False),
        (402, "3011", e.SnapTradeConnectionDisabledError, False),
        (425, "3012", e.SnapTradeDataNotReadyError, True),
        (503, "3002", e.SnapTradeBrokerageUnavailableError, True),
        (500, "1000", e.SnapTradeServerError, True),
        (410, None, e.SnapTradeEndpointRetiredError, False),
        (422, None, e.SnapTradeValidationError, False),
        (429, "0000", e.SnapTradeRateLimitError, True),
        (502, None, e.SnapTradeServerError, True),
        (418, None, e.SnapTradeError, False),
    ],
)
def test_code_before_status(status, code, cls, retryable):
    body = {"detail": "d", "status_code": status, **({"code": code} if code else {})}
    error = error_from_response(READ, status, {"X-Request-ID": "rid-1"}, body)
    assert type(error) is cls
    assert error.retryable is retryable
    assert (error.status, error.code, error.request_id, error.operation) == (status, code, "rid-1", READ.name)
    assert "rid-1" in str(error) and READ.name in str(error)


def test_1076_and_1083_say_different_things():
    signature = error_from_response(READ, 401, {}, {"code": "1076"})
    user = error_from_response(READ, 401, {}, {"code": "1083"})
    assert "clock" in signature.hint and "SNAPTRADE_CONSUMER_KEY" in signature.hint
    assert "userSecret" in user.hint


def test_429_retry_after_and_scope():
    assert retry_after_of({"Retry-After": "7"}) == (7.0, "unknown")
    assert retry_after_of({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "12"}) == (12.0, "customer")
    assert retry_after_of({"X-RateLimit-Account-Remaining": "0", "X-RateLimit-Account-Reset": "3"}) == (3.0, "account")
    error = error_from_response(READ, 429, {"Retry-After": "7"}, {"detail": "Request was throttled."})
    assert isinstance(error, e.SnapTradeRateLimitError) and error.retry_after == 7.0
    refresh = error_from_response(OPERATIONS["refresh_brokerage_authorization"], 429, {}, {"detail": "throttled"})
    assert refresh.limit_scope == "refresh"  # type: ignore[attr-defined]


def test_disabled_connection_names_the_connection_to_repair():
    error = error_from_response(
        OPERATIONS["refresh_brokerage_authorization"], 402, {}, {"code": "3003"}, {"authorization_id": "auth-9"}
    )
    assert isinstance(error, e.SnapTradeConnectionDisabledError) and error.authorization_id == "auth-9"


def test_non_json_and_empty_bodies_still_map():
    assert type(error_from_response(READ, 500, {}, b"<html>oops</html>")) is e.SnapTradeServerError
    assert type(error_from_response(READ, 404, {}, None)) is e.SnapTradeNotFoundError


def test_errors_redact_and_pickle():
    error = e.SnapTradeServerError("failed at /x?userSecret=abcdef123456", status=500, request_id="r")
    assert "abcdef123456" not in str(error) and "abcdef123456" not in repr(error)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is e.SnapTradeServerError and clone.status == 500 and clone.request_id == "r"
    limited = pickle.loads(pickle.dumps(e.SnapTradeRateLimitError("x", retry_after=3.0, limit_scope="account")))
    assert limited.retry_after == 3.0 and limited.limit_scope == "account"


def test_retry_after_as_http_date_and_reset_as_seconds():
    now = 1_800_000_000.0
    date = "Fri, 15 Jan 2027 08:00:07 GMT"
    from email.utils import parsedate_to_datetime

    expected = parsedate_to_datetime(date).timestamp() - now
    assert retry_after_of({"Retry-After": date}, now=now) == (expected, "unknown")
    assert retry_after_of({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9"}, now=now) == (9.0, "customer")
