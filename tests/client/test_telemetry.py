"""Spans and metrics of the road, read back through the OpenTelemetry SDK's in-memory exporters.

Every case checks the recorded instruments and attributes against ``metric_table.METRICS``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from otel_helpers import SPANS, check_against_table, delta, finished, install, points, snapshot, spec

from aims_snaptrade import CallOptions, SafeSnapTradeClient, SnapTradeGuardrailError
from aims_snaptrade import errors as e
from aims_snaptrade.observability.metric_table import metrics_markdown
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import Fault, SnapTradeEmulator
from aims_snaptrade.testing.config import ClientCredentials

ACCOUNTS = "SnapTrade list_all_user_accounts"


@pytest.fixture(autouse=True)
def _otel():
    install()
    SPANS.clear()


def _one(name: str) -> trace.Span:
    [span] = finished(name)
    return span


def test_a_successful_call_is_one_client_span_by_the_http_conventions(make_client, emu, alice):
    client = make_client()
    before = snapshot()
    client.list_accounts(alice.user_id)
    changes = delta(before, snapshot())
    span = _one(ACCOUNTS)
    assert span.kind == trace.SpanKind.CLIENT
    attributes = dict(span.attributes)
    assert attributes["http.request.method"] == "GET"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == emu.port
    assert attributes["url.template"] == "/api/v1/accounts/all"
    assert attributes["http.response.status_code"] == 200
    assert attributes["snaptrade.operation"] == "list_all_user_accounts"
    assert re.fullmatch(r"[0-9a-f]{32}", attributes["snaptrade.request_id"])
    assert "http.request.resend_count" not in attributes
    assert "snaptrade.user_id" not in attributes  # ids only when the setting allows it
    check_against_table(changes)
    [(call, n)] = points(changes, spec("calls").name)
    assert n == 1 and call["http.response.status_code"] == 200 and "error.type" not in call
    [(request, n)] = points(changes, spec("request_duration").name)
    assert n == 1 and request["http.response.status_code"] == 200 and request["server.port"] == emu.port
    assert not points(changes, spec("errors").name)
    # In flight during the request, back to zero after it.
    assert sum(v for _, v in points(changes, spec("active_requests").name)) == 0


def test_user_ids_reach_spans_only_when_the_setting_allows_it(make_client, alice):
    make_client(telemetry_include_user_ids=True).get_positions(alice.user_id, alice.account_ids[0])
    attributes = _one("SnapTrade get_all_account_positions").attributes
    assert attributes["snaptrade.user_id"] == alice.user_id
    assert attributes["snaptrade.account_id"] == alice.account_ids[0]


# Each error class the road raises, and how the emulator is driven into it.
ERROR_CASES = [
    (Fault.unauthorized("1076"), e.SnapTradeAuthError, 401),
    (Fault.unauthorized("1083"), e.SnapTradeAuthError, 401),
    (Fault.status(400, code="1012"), e.SnapTradeValidationError, 400),
    (Fault.status(403, code="1141"), e.SnapTradePermissionError, 403),
    (Fault.status(404, code="1011"), e.SnapTradeNotFoundError, 404),
    (Fault.status(402, code="3003"), e.SnapTradeConnectionDisabledError, 402),
    (Fault.status(425, code="3012"), e.SnapTradeDataNotReadyError, 425),
    (Fault.status(500, code="1000"), e.SnapTradeServerError, 500),
    (Fault.status(503, code="3002"), e.SnapTradeBrokerageUnavailableError, 503),
    (Fault.rate_limited(1), e.SnapTradeRateLimitError, 429),
    (Fault.drop(), e.SnapTradeConnectionError, None),
    (Fault.malformed_json(), e.SnapTradeConnectionError, None),
    (Fault.timeout(hold=3), e.SnapTradeTimeoutError, None),
]


@pytest.mark.parametrize(("fault", "error", "status"), ERROR_CASES, ids=lambda v: getattr(v, "name", None))
def test_each_error_class_ends_the_span_and_counts_one_error(make_client, emu, alice, fault, error, status):
    client = make_client(read_timeout=0.5)
    emu.faults.add(fault, operation="list_all_user_accounts")
    before = snapshot()
    with pytest.raises(error) as raised:
        client.list_accounts(alice.user_id)
    changes = delta(before, snapshot())
    name = type(raised.value).__name__
    span = _one(ACCOUNTS)
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.attributes["error.type"] == name
    assert span.attributes.get("http.response.status_code") == status
    check_against_table(changes)
    [(failure, n)] = points(changes, spec("errors").name)
    assert n == 1 and failure["error.type"] == name
    [(request, n)] = points(changes, spec("request_duration").name)
    assert n == 1 and request["error.type"] == name and request.get("http.response.status_code") == status
    hits = points(changes, spec("rate_limit_hits").name)
    assert [h["snaptrade.rate_limit.source"] for h, _ in hits] == (["snaptrade"] if status == 429 else [])


def test_a_refused_call_counts_an_error_without_a_request(make_client, alice):
    client = make_client()
    before = snapshot()
    with pytest.raises(SnapTradeGuardrailError):
        client.delete_user(alice.user_id)
    changes = delta(before, snapshot())
    span = _one("SnapTrade delete_snap_trade_user")
    assert span.attributes["error.type"] == "SnapTradeGuardrailError"
    assert [a["error.type"] for a, _ in points(changes, spec("errors").name)] == ["SnapTradeGuardrailError"]
    assert not points(changes, spec("request_duration").name)


def test_a_retry_is_a_resend_with_its_own_request_measurement(make_client, emu, alice):
    client = make_client(retry="standard")
    emu.faults.add(Fault.status(503, code="3002"), operation="list_all_user_accounts", times=1)
    before = snapshot()
    client.list_accounts(alice.user_id)
    changes = delta(before, snapshot())
    span = _one(ACCOUNTS)
    assert span.attributes["http.request.resend_count"] == 1
    assert span.attributes["snaptrade.retry.wait_s"] > 0
    assert span.attributes["http.response.status_code"] == 200
    assert [ev.name for ev in span.events] == ["attempt failed", "retry"]
    check_against_table(changes)
    requests = points(changes, spec("request_duration").name)
    assert sorted((a.get("error.type", ""), a["http.response.status_code"]) for a, _ in requests) == [
        ("", 200),
        ("SnapTradeBrokerageUnavailableError", 503),
    ]
    [(retry, n)] = points(changes, spec("retries").name)
    assert n == 1 and retry["error.type"] == "SnapTradeBrokerageUnavailableError"
    [(call, n)] = points(changes, spec("calls").name)
    assert n == 1 and "error.type" not in call


def test_a_budget_wait_is_on_the_span_and_a_refusal_is_a_local_rate_limit_hit(make_client, alice):
    client = make_client(customer_limit=1, customer_limit_window=2, rate_limit_max_wait=10.0)
    client.list_accounts(alice.user_id)
    before = snapshot()
    client.list_accounts(alice.user_id)  # waits for the single slot to free
    waited = [s for s in finished(ACCOUNTS) if "snaptrade.rate_limit.wait_s" in s.attributes]
    assert waited and max(s.attributes["snaptrade.rate_limit.wait_s"] for s in waited) >= 0.5
    with pytest.raises(e.SnapTradeBudgetExhaustedError):
        client.list_accounts(alice.user_id, options=CallOptions(rate_limit_mode="fail"))
    changes = delta(before, snapshot())
    check_against_table(changes)
    [(hit, n)] = points(changes, spec("rate_limit_hits").name)
    assert n == 1 and hit["snaptrade.rate_limit.source"] == "local" and hit["snaptrade.rate_limit.scope"] == "customer"
    assert len(points(changes, spec("request_duration").name)) == 1  # the refused call sent nothing


def test_the_budget_gauge_reports_each_budget_from_the_limiter(make_client, alice):
    client = make_client(customer_limit=4, customer_limit_window=60.0)
    client.list_accounts(alice.user_id)
    gauge = {
        dict(attrs)["snaptrade.rate_limit.budget"]: value
        for (name, attrs), value in snapshot().items()
        if name == spec("budget_utilization").name
    }
    assert gauge["customer"] >= 0.25
    usage = {u.name: u.fraction for u in client.rate_limit_usage()}
    assert gauge["customer"] >= usage["customer"]


def test_the_docs_table_is_the_metric_table():
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "telemetry.md").read_text()
    table = docs.split("<!-- metrics-table:start -->\n", 1)[1].split("<!-- metrics-table:end -->", 1)[0]
    assert table.strip() == metrics_markdown().strip(), "docs/telemetry.md must hold metric_table.metrics_markdown()"


_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_secret_text = st.text(alphabet=_ALPHABET, min_size=20, max_size=48)


def _encodings(secret: str) -> set[str]:
    raw = secret.encode()
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
    }


EXAMPLES = int(os.environ.get("AIMS_TELEMETRY_EXAMPLES", "8"))
_ran = {"examples": 0, "spans": 0, "points": 0}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(consumer_key=_secret_text, stale_secret=_secret_text)
def _no_secret_in_any_attribute(consumer_key, stale_secret):
    install()
    SPANS.clear()
    before = snapshot()
    credentials = ClientCredentials("AIMS-TELEMETRY", consumer_key)
    with SnapTradeEmulator(clients=(credentials,)) as emu:
        store = MemorySecretStore()
        user = emu.connect("hyp-user", brokerage="ALPACA", client_id="AIMS-TELEMETRY")
        store.put(user.user_id, user.user_secret)
        emu.create_user("stale-user", client_id="AIMS-TELEMETRY")
        store.put("stale-user", stale_secret)
        with SafeSnapTradeClient(
            client_id="AIMS-TELEMETRY",
            consumer_key=consumer_key,
            environment="sandbox",
            base_url=emu.base_url,
            secret_store=store,
            retry="standard",
        ) as client:
            emu.faults.add(Fault.status(503, code="3002"), operation="list_all_user_accounts", times=1)
            client.list_accounts(user.user_id)
            client.rotate_user_secret(user.user_id)
            with pytest.raises(e.SnapTradeAuthError):
                client.list_accounts("stale-user")
            secrets = {consumer_key, stale_secret, user.user_secret, store.get(user.user_id)}
    spans = SPANS.get_finished_spans()
    changes = delta(before, snapshot())
    assert len(spans) >= 3
    recorded = json.dumps(
        [
            [s.name, s.status.description, dict(s.attributes), [[ev.name, dict(ev.attributes)] for ev in s.events]]
            for s in spans
        ]
        + [[name, sorted(map(str, attrs))] for name, attrs in changes],
        default=str,
    )
    for secret in secrets:
        for form in _encodings(secret):
            assert form not in recorded
    _ran["examples"] += 1
    _ran["spans"] += len(spans)
    _ran["points"] += len(changes)


def test_no_attribute_of_any_span_event_or_metric_holds_a_secret():
    _no_secret_in_any_attribute()
    print(
        f"secret search: {_ran['examples']} generated key/secret sets; "
        f"{_ran['spans']} spans and {_ran['points']} metric points searched, none holds a secret"
    )


async def test_the_async_clients_gauge_shows_the_usage_it_last_read(make_async_client, alice):
    async with make_async_client(customer_limit=5, customer_limit_window=60) as client:
        for _ in range(3):
            await client.list_accounts(alice.user_id)
        [customer] = [u for u in await client.rate_limit_usage() if u.name == "customer"]
        gauge = [
            value
            for (name, attrs), value in snapshot().items()
            if name == spec("budget_utilization").name and dict(attrs)["snaptrade.rate_limit.budget"] == "customer"
        ]
        assert customer.fraction == 0.6 and max(gauge) >= 0.6


def test_telemetry_uses_only_the_api_and_nothing_of_the_transport():
    import ast
    from pathlib import Path

    import aims_snaptrade

    src = Path(aims_snaptrade.__file__).parent
    for module in ("telemetry.py", "metric_table.py", "health.py", "alert_rules.py"):
        tree = ast.parse((src / "observability" / module).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        assert not {m for m in imported if m.startswith(("aims_snaptrade._transport", "opentelemetry.sdk"))}, module
    for path in src.rglob("*.py"):
        assert "opentelemetry.sdk" not in path.read_text(), path


def test_a_call_refused_locally_is_marked_so_the_error_rate_leaves_it_out(make_client, alice):
    class NoConsent:
        def has_consent(self, user_id: str, scope: str) -> bool:
            return False

    client = make_client(consent=NoConsent())
    before = snapshot()
    with pytest.raises(e.SnapTradeConsentRequiredError):
        client.list_accounts(alice.user_id)
    changes = delta(before, snapshot())
    check_against_table(changes)
    [(error, _)] = points(changes, spec("errors").name)
    [(call, _)] = points(changes, spec("calls").name)
    assert error["snaptrade.refused_locally"] is True and call["snaptrade.refused_locally"] is True
    # a call that reached SnapTrade carries no such mark
    client2 = make_client()
    before = snapshot()
    client2.list_accounts(alice.user_id)
    [(sent, _)] = points(delta(before, snapshot()), spec("calls").name)
    assert "snaptrade.refused_locally" not in sent
