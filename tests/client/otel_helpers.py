"""The OpenTelemetry SDK's in-memory exporters, installed once per process, and readers over them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aims_snaptrade.observability.metric_table import METRICS, MetricSpec

SPANS = InMemorySpanExporter()
METRIC_READER = InMemoryMetricReader()
_installed = False


def install() -> None:
    """Global providers can be set once per process; the library's proxies pick them up."""
    global _installed
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(SPANS))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[METRIC_READER]))
        _installed = True


Key = tuple[str, frozenset[tuple[str, Any]]]


def snapshot() -> dict[Key, float]:
    """Every data point of the library's scope: counters and gauges by value, histograms by count."""
    values: dict[Key, float] = {}
    data = METRIC_READER.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            if scope.scope.name != "aims_snaptrade":
                continue
            for m in scope.metrics:
                for point in m.data.data_points:
                    key = (m.name, frozenset(point.attributes.items()))
                    if isinstance(m.data, Histogram):
                        values[key] = point.count
                    elif isinstance(m.data, Sum | Gauge) and isinstance(point, NumberDataPoint):
                        values[key] = point.value
    return values


def delta(before: dict[Key, float], after: dict[Key, float]) -> Counter[Key]:
    """What changed between two snapshots (cumulative counters), dropping zeros."""
    changed: Counter[Key] = Counter()
    for key, value in after.items():
        difference = value - before.get(key, 0)
        if difference:
            changed[key] = difference
    return changed


def points(changes: Counter[Key], name: str) -> list[tuple[dict[str, Any], float]]:
    return [(dict(attrs), value) for (metric_name, attrs), value in changes.items() if metric_name == name]


def spec(key: str) -> MetricSpec:
    return next(s for s in METRICS if s.key == key)


def check_against_table(changes: Counter[Key]) -> None:
    """Every instrument recorded is in the table, with only the attributes the table lists."""
    table = {s.name: s for s in METRICS}
    for name, attrs in changes:
        assert name in table, f"{name} is not in metric_table.METRICS"
        extra = {k for k, _ in attrs} - set(table[name].attributes)
        assert not extra, f"{name} carries attributes {extra} the table does not list"


def finished(name: str) -> list[ReadableSpan]:
    return [s for s in SPANS.get_finished_spans() if s.name == name]
