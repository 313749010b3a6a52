"""Spans and metrics of the road, read back through the OpenTelemetry SDK's in-memory exporters."""

from __future__ import annotations

import json

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aims_snaptrade import SnapTradeGuardrailError
from aims_snaptrade.testing import Fault

_spans = InMemorySpanExporter()
_metrics = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def _providers():
    # Global providers can be set once per process; the library's proxies pick them up.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_spans))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[_metrics]))


@pytest.fixture(autouse=True)
def _clear():
    _spans.clear()


def _points(name):
    data = _metrics.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def test_a_call_is_one_client_span_with_safe_attributes(make_client, emu, alice):
    client = make_client(retry="standard")
    emu.faults.add(Fault.status(503), operation="list_all_user_accounts", times=1)
    client.list_accounts(alice.user_id)
    [span] = [s for s in _spans.get_finished_spans() if s.name == "SnapTrade list_all_user_accounts"]
    assert span.kind == trace.SpanKind.CLIENT
    attributes = dict(span.attributes)
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.template"] == "/api/v1/accounts/all"
    assert attributes["http.response.status_code"] == 200
    assert attributes["snaptrade.request_id"]
    assert [e.name for e in span.events] == ["attempt failed", "retry"]
    everything = json.dumps([dict(s.attributes) for s in _spans.get_finished_spans()], default=str) + json.dumps(
        [dict(e.attributes) for s in _spans.get_finished_spans() for e in s.events], default=str
    )
    for secret in (alice.user_secret, emu.consumer_key):
        assert secret not in everything
    retries = sum(p.value for p in _points("snaptrade.client.retries"))
    assert retries >= 1
    outcomes = {p.attributes["outcome"] for p in _points("snaptrade.client.attempts")}
    assert {"ok", "SnapTradeBrokerageUnavailableError"} <= outcomes


def test_refused_and_failed_calls_end_their_span_with_an_error(make_client, emu, alice):
    client = make_client()
    with pytest.raises(SnapTradeGuardrailError):
        client.delete_user(alice.user_id)
    emu.faults.add(Fault.unauthorized("1083"), operation="get_all_account_positions")
    with pytest.raises(Exception, match="1083"):
        client.get_positions(alice.user_id, alice.account_ids[0])
    spans = {s.name: s for s in _spans.get_finished_spans()}
    refused = spans["SnapTrade delete_snap_trade_user"]
    assert refused.status.status_code == trace.StatusCode.ERROR
    assert refused.attributes["error.type"] == "SnapTradeGuardrailError"
    rejected = spans["SnapTrade get_all_account_positions"]
    assert rejected.attributes["snaptrade.error_code"] == "1083"
    assert rejected.attributes["http.response.status_code"] == 401
    durations = [p for p in _points("snaptrade.client.operation.duration") if p.attributes["outcome"] != "ok"]
    assert durations and all(p.count >= 1 for p in durations)
