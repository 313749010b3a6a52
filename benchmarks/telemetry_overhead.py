"""Telemetry cost per call: the road's CallTelemetry alone, without and with an OpenTelemetry SDK.

No IO: one call's telemetry (span, budget wait, one request, success) is replayed in a loop,
first with the API's no-op providers (an application that configures no SDK), then with the SDK
and in-memory exporters (spans exported one by one, metrics aggregated). Printed: microseconds of
CPU per call for each.

    python benchmarks/telemetry_overhead.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import time

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aims_snaptrade.observability.telemetry import CallTelemetry, Endpoint
from aims_snaptrade.operations import get_operation


def _per_call(calls: int) -> float:
    operation = get_operation("get_all_account_positions")
    endpoint = Endpoint.of("https://api.snaptrade.com/api/v1")
    seen = []
    started = time.process_time()
    for _ in range(calls):
        telemetry = CallTelemetry(operation, endpoint, observers=(seen.append,))
        telemetry.subject("user-1", "account-1")
        telemetry.acquiring()
        telemetry.sending()
        telemetry.attempt_succeeded(200)
        telemetry.succeeded(200, "0123456789abcdef0123456789abcdef")
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    calls = parser.parse_args().calls
    _per_call(1000)  # warm up
    noop = _per_call(calls)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    _per_call(1000)
    spans.clear()
    sdk = _per_call(calls)
    print(f"{calls} calls: no SDK {noop:6.1f} us CPU/call | SDK + in-memory exporters {sdk:6.1f} us CPU/call")


if __name__ == "__main__":
    main()
