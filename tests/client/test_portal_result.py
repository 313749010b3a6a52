"""PortalResult reads the Connection Portal's outcome in every shape SnapTrade documents, refuses
anything else with a typed error, and the emulator's portal reports the same shapes."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade import PortalResult, PortalStatus
from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.testing import portal_outcome

IDS = st.uuids().map(str) | st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)
APP_URLS = st.sampled_from(["https://aims.example/back", "https://aims.example/back?tab=accounts", "myapp://done"])


@settings(max_examples=80, deadline=None)
@given(APP_URLS, IDS)
def test_the_return_to_the_redirect_url_names_the_connection(app_url, connection_id):
    url = app_url + ("&" if "?" in app_url else "?") + urlencode({"status": "SUCCESS", "connection_id": connection_id})
    for given_form in (url, {"status": "SUCCESS", "connection_id": [connection_id], "tab": "x"}):
        result = PortalResult.from_redirect(given_form)
        assert result.succeeded and result.connection_id == connection_id and result.status is PortalStatus.SUCCESS


def test_errors_and_abandonment_from_the_redirect():
    failed = PortalResult.from_redirect("https://aims.example/back?status=ERROR&status_code=401&error_code=1086")
    assert (failed.status, failed.status_code, failed.error_code, failed.succeeded) == ("ERROR", 401, "1086", False)
    assert PortalResult.from_redirect("?status=ABANDONED").status is PortalStatus.ABANDONED


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            {"status": "SUCCESS", "authorizationId": "8b5f262d-4bb9-365d-888a-202bd3b15fa1"},
            ("SUCCESS", "8b5f262d-4bb9-365d-888a-202bd3b15fa1", None, None),
        ),
        (
            {"status": "ERROR", "errorCode": "1006", "statusCode": "400", "detail": "Session expired"},
            ("ERROR", None, "1006", 400),
        ),
        ('{"status": "ERROR", "errorCode": 3000, "statusCode": 503}', ("ERROR", None, "3000", 503)),
        ("CLOSED", ("CLOSED", None, None, None)),
        ("CLOSE_MODAL", ("ABANDONED", None, None, None)),
        ("ABANDONED", ("ABANDONED", None, None, None)),
        ("SUCCESS", ("SUCCESS", None, None, None)),  # the older iframe message names no connection
        ("ERROR:401", ("ERROR", None, None, 401)),
    ],
)
def test_every_documented_window_message(message, expected):
    result = PortalResult.from_message(message)
    assert (result.status, result.connection_id, result.error_code, result.status_code) == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=15), children, max_size=4),
    max_leaves=8,
)
MESSAGES = JSON | st.fixed_dictionaries(
    {"status": st.sampled_from(["SUCCESS", "ERROR", "success", "NOPE", 5])},
    optional={"authorizationId": JSON | IDS, "errorCode": JSON, "statusCode": JSON, "detail": JSON},
)


@settings(max_examples=300, deadline=None)
@given(MESSAGES)
def test_anything_else_is_a_typed_refusal_never_a_crash(message):
    for read in (PortalResult.from_message, PortalResult.from_redirect):
        arg = (
            message
            if read is PortalResult.from_message
            else (message if isinstance(message, str | dict) else str(message))
        )
        result = _read_or_refusal(read, arg)
        if isinstance(result, SnapTradeValidationError):
            assert "Connection Portal" in result.message
            continue
        assert result.status in set(PortalStatus)
        if result.succeeded and result.connection_id is not None:
            assert 1 <= len(result.connection_id) <= 128 and "<" not in result.connection_id


def _read_or_refusal(read, arg):
    try:
        return read(arg)
    except SnapTradeValidationError as refused:
        return refused


@pytest.mark.parametrize(
    "bad",
    [
        "https://aims.example/back",
        "?status=SUCCESS",
        "?status=SUCCESS&connection_id=%3Cscript%3E",
        "?status=ERROR&status_code=9999",
    ],
)
def test_malformed_redirects_say_what_is_wrong(bad):
    with pytest.raises(SnapTradeValidationError, match="Not a Connection Portal result"):
        PortalResult.from_redirect(bad)


@pytest.fixture
def portal_client(make_client):
    client = make_client()
    client.ensure_user("pat")
    return client


def test_the_emulator_redirects_at_once_with_immediate_redirect(portal_client):
    link = portal_client.connection_portal_url(
        "pat", custom_redirect="https://aims.example/back?x=1", immediate_redirect=True
    )
    result, back = portal_outcome(link.redirect_uri)
    assert result.succeeded and back is not None and back.startswith("https://aims.example/back?x=1&status=SUCCESS")
    assert {a.connection_id for a in portal_client.list_accounts("pat")} == {result.connection_id}


def test_without_immediate_redirect_the_finish_screen_posts_the_message_and_links_back(portal_client):
    link = portal_client.connection_portal_url("pat", custom_redirect="https://aims.example/back")
    result, back = portal_outcome(link.redirect_uri)
    assert result.succeeded and PortalResult.from_redirect(back) == result


def test_a_failure_and_an_abandonment_are_reported_in_both_shapes(portal_client):
    link = portal_client.connection_portal_url("pat", custom_redirect="https://aims.example/back")
    failed, back = portal_outcome(link.redirect_uri, scenario="invalid_credentials")
    assert (failed.status, failed.error_code, failed.status_code) == ("ERROR", "invalid_credentials", 401)
    assert failed.detail and PortalResult.from_redirect(back).error_code == "invalid_credentials"
    left, back = portal_outcome(link.redirect_uri, action="abandon")
    assert left.status is PortalStatus.ABANDONED and PortalResult.from_redirect(back) == left
    assert portal_client.list_accounts("pat") == []
    plain = portal_client.connection_portal_url("pat")  # no customRedirect: the message alone
    assert portal_outcome(plain.redirect_uri)[1] is None
    assert json.dumps(failed.model_dump(mode="json"))  # a plain JSON-ready result
